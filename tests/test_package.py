"""Tests for the package as a whole: public names, metadata, import cost."""

import importlib
import inspect
import json
import pathlib
import re

import keras
import pytest
from processes import run_in_fresh_process

import keras_regkit


@pytest.mark.parametrize("name", keras_regkit.__all__)
def test_every_public_name_imports(name):
    assert getattr(keras_regkit, name) is not None


# The public API, module by module: every other name is private (a leading
# underscore on it or on its module). A change here is a change of API.
PUBLIC_API = {
    "keras_regkit": [
        "ElasticNet",
        "ExpAbs",
        "GroupLasso",
        "L1",
        "L2",
        "PenaltyPlan",
        "SharpnessAware",
        "ShrinkageReport",
        "ShrinkageRow",
        "__version__",
        "callbacks",
        "compact",
        "dead_units",
        "layers",
        "mc_predict",
        "penalties",
        "plot",
        "pruning",
        "regularize",
        "regularizers",
        "schedules",
        "selectors",
        "shrink",
        "tuning",
    ],
    "keras_regkit.callbacks": [
        "DropoutScheduler",
        "EarlyStopping",
        "GradualPruning",
        "PenaltyScheduler",
        "ProximalStep",
        "RegularizationMonitor",
        "WeightAveraging",
        "WeightShrinkage",
    ],
    "keras_regkit.layers": ["DropPath", "Dropout", "convert_dropout"],
    "keras_regkit.plot": [
        "plot_learning_curves",
        "plot_shrinkage_path",
        "plot_strength_sweep",
        "plot_weight_histograms",
    ],
    "keras_regkit.pruning": [
        "ConstantSparsity",
        "PolynomialDecay",
        "PruningSchedule",
    ],
    "keras_regkit.regularizers": [
        "ElasticNet",
        "ExpAbs",
        "GroupLasso",
        "L1",
        "L2",
        "NAMES",
        "get",
        "serialize",
        "with_strength",
    ],
    "keras_regkit.schedules": ["Constant", "Curriculum", "LinearRamp"],
    "keras_regkit.selectors": [
        "LayerSelector",
        "matches",
        "select",
        "sublayers",
        "walk",
    ],
    "keras_regkit.tuning": [
        "DEFAULT_KINDS",
        "KINDS",
        "RegularizedHyperModel",
        "hp_dropout",
        "hp_regularizer",
    ],
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC_API))
def test_public_api_is_pinned(module_name):
    module = importlib.import_module(module_name)
    assert sorted(module.__all__) == PUBLIC_API[module_name]


@pytest.mark.parametrize("module_name", sorted(PUBLIC_API))
def test_every_public_looking_name_is_exported(module_name):
    # A function or class defined in a public module under a name without
    # a leading underscore is public API: it must be in `__all__`.
    module = importlib.import_module(module_name)
    defined_here = [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module_name
    ]
    assert set(defined_here) <= set(module.__all__)


def test_implementation_modules_are_private():
    package = pathlib.Path(keras_regkit.__file__).parent
    public_files = {
        str(path.relative_to(package.parent).with_suffix("")).replace("/", ".")
        for path in package.rglob("*.py")
        if not any(
            part.startswith("_") for part in path.relative_to(package).parts
        )
    }
    public_modules = {name for name in PUBLIC_API if name != "keras_regkit"}
    packages = {"keras_regkit.callbacks", "keras_regkit.layers"}
    assert public_files == public_modules - packages


@pytest.mark.slow
def test_plot_and_tuning_are_imported_on_first_use():
    output = run_in_fresh_process(
        """
        import json, sys
        import keras_regkit as kr
        before = [m in sys.modules for m in
                  ("keras_regkit.tuning", "keras_regkit.plot", "keras_tuner")]
        hypermodel = kr.tuning.RegularizedHyperModel
        figure = kr.plot.plot_learning_curves
        after = [m in sys.modules for m in
                 ("keras_regkit.tuning", "keras_regkit.plot")]
        try:
            kr.no_such_name
        except AttributeError as error:
            message = str(error)
        print(json.dumps([before, after, hypermodel.__name__, message,
                          "tuning" in dir(kr)]))
        """
    )
    before, after, hypermodel, message, listed = json.loads(
        output.strip().splitlines()[-1]
    )
    assert before == [False, False, False]
    assert after == [True, True]
    assert hypermodel == "RegularizedHyperModel"
    assert message == "module 'keras_regkit' has no attribute 'no_such_name'"
    assert listed


def test_files_saved_with_the_old_module_paths_still_load():
    # Before 0.1.0 the classes lived in public-looking modules
    # (keras_regkit.layers.dropout); a saved config names its module, but
    # Keras finds registered classes by their registered name.
    config = keras.saving.serialize_keras_object(
        keras_regkit.layers.Dropout(0.3, name="drop")
    )
    assert config["module"] == "keras_regkit.layers._dropout"
    config["module"] = "keras_regkit.layers.dropout"
    layer = keras.saving.deserialize_keras_object(config)
    assert isinstance(layer, keras_regkit.layers.Dropout)
    assert layer.rate == 0.3


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


def _extras():
    import configparser

    config = configparser.ConfigParser()
    config.read(pathlib.Path(__file__).parents[1] / "setup.cfg")
    section = config["options.extras_require"]
    return {name: section[name].split() for name in section}


def test_tensorflow_extras_offer_the_full_and_the_cpu_package():
    # `tensorflow-cpu` replaces an installed `tensorflow` (GPU) package:
    # a GPU user must be able to ask for the full one.
    extras = _extras()
    assert extras["tensorflow"] == ["tensorflow>=2.16"]
    assert extras["tensorflow-cpu"] == ["tensorflow-cpu>=2.16"]


def test_aggregate_extras_are_built_from_the_others():
    extras = _extras()
    assert extras["all"] == ["keras-regkit[tuner,demo]"]
    # The tests build the docs site and read it in a browser.
    assert extras["test"][0] == "keras-regkit[all,docs]"
    assert "playwright>=1.40" in extras["test"]
    assert extras["dev"] == ["keras-regkit[test]", "ruff>=0.5", "mypy>=1.10"]
    # No package is listed twice along the way.
    own = [r for e in extras.values() for r in e if "[" not in r]
    assert len(own) == len(set(own))


@pytest.mark.parametrize(
    "cls",
    [
        keras_regkit.L1,
        keras_regkit.L2,
        keras_regkit.ElasticNet,
        keras_regkit.ExpAbs,
        keras_regkit.GroupLasso,
        keras_regkit.layers.Dropout,
        keras_regkit.layers.DropPath,
        keras_regkit.schedules.Constant,
        keras_regkit.schedules.LinearRamp,
        keras_regkit.schedules.Curriculum,
        keras_regkit.pruning.PolynomialDecay,
        keras_regkit.pruning.ConstantSparsity,
    ],
)
def test_saved_classes_are_registered_under_the_package_name(cls):
    name = keras.saving.get_registered_name(cls)
    assert name == f"keras_regkit>{cls.__name__}"


def test_no_core_module_imports_the_callbacks():
    # The callbacks are built on the core (penalties, shrink, selectors),
    # never the other way round. The integrations above both (tuning, the
    # demo) may use them.
    import ast

    package = pathlib.Path(keras_regkit.__file__).parent
    above_callbacks = {"__init__.py", "__main__.py", "_demo.py", "tuning.py"}
    offenders = []
    for path in sorted(package.glob("*.py")):
        if path.name in above_callbacks:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [
                    f"{node.module}.{alias.name}" for alias in node.names
                ]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(n.startswith("keras_regkit.callbacks") for n in names):
                offenders.append(path.name)
    assert offenders == []
