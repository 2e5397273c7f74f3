"""Tests for the package as a whole: public names, metadata, import cost."""

import json
import pathlib
import re

import pytest
from serialization import run_in_fresh_process

import keras_regkit


@pytest.mark.parametrize("name", keras_regkit.__all__)
def test_every_public_name_imports(name):
    assert getattr(keras_regkit, name) is not None


def test_version_is_pep440():
    assert re.fullmatch(
        r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?",
        keras_regkit.__version__,
    )


def test_type_information_is_shipped():
    package = pathlib.Path(keras_regkit.__file__).parent
    assert (package / "py.typed").is_file()


@pytest.mark.slow
def test_import_pulls_in_no_optional_package():
    # Keras itself imports scikit-learn and matplotlib when they are
    # installed, so compare with what `import keras` alone loaded, and also
    # import with the optional packages made unimportable.
    output = run_in_fresh_process(
        """
        import json, sys
        import keras
        before = set(sys.modules)
        import keras_regkit
        optional = ("keras_tuner", "matplotlib", "sklearn")
        added = {m.split(".")[0] for m in set(sys.modules) - before}
        print(json.dumps(sorted(added & set(optional))))
        """
    )
    assert json.loads(output.strip().splitlines()[-1]) == []
    output = run_in_fresh_process(
        """
        import sys
        for name in ("keras_tuner", "matplotlib", "sklearn"):
            sys.modules[name] = None  # any import of them now fails
        import keras_regkit
        print(keras_regkit.L2(0.5))
        """
    )
    assert output.strip().splitlines()[-1] == "L2(l2=0.5)"
