"""Every public signature is annotated: parameters and return.

Public means a function or class named in the `__all__` of one of the
public modules, and, for a class, its `__init__`, `__call__` and every
method or property without a leading underscore that the class or one of
its keras_regkit base classes defines (not those inherited from Keras).
mypy (`[tool.mypy]` in pyproject.toml) checks that the annotations hold.
"""

import importlib
import inspect

import pytest

pytestmark = pytest.mark.backend_independent

PUBLIC_MODULES = (
    "keras_regkit",
    "keras_regkit.callbacks",
    "keras_regkit.layers",
    "keras_regkit.plot",
    "keras_regkit.pruning",
    "keras_regkit.regularizers",
    "keras_regkit.schedules",
    "keras_regkit.selectors",
    "keras_regkit.tuning",
)

# Dunder methods that are public API all the same.
_PUBLIC_DUNDERS = ("__init__", "__call__")


def _is_ours(obj):
    return getattr(obj, "__module__", "").split(".")[0] == "keras_regkit"


def _functions_of(cls):
    """`(qualified name, function)` for each public callable `cls` defines.

    Walks the class and its keras_regkit bases (a method defined in Keras
    is Keras's to annotate); properties give their getter and setter.
    """
    found = {}
    for klass in reversed(cls.__mro__):
        if not _is_ours(klass):
            continue
        for name, attribute in vars(klass).items():
            if name.startswith("_") and name not in _PUBLIC_DUNDERS:
                continue
            if isinstance(attribute, (staticmethod, classmethod)):
                attribute = attribute.__func__
            if isinstance(attribute, property):
                accessors = {"getter": attribute.fget, "setter": attribute.fset}
                for kind, accessor in accessors.items():
                    if accessor is not None:
                        found[f"{name}.{kind}"] = (klass, accessor)
            elif inspect.isfunction(attribute):
                found[name] = (klass, attribute)
    return [
        (f"{klass.__module__}.{klass.__qualname__}.{name}", function)
        for name, (klass, function) in sorted(found.items())
    ]


def _public_functions():
    """`(qualified name, function)` for every public function and method."""
    found = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) and _is_ours(value):
                found.update(_functions_of(value))
            elif inspect.isfunction(value) and _is_ours(value):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return sorted(found.items())


PUBLIC_FUNCTIONS = _public_functions()


@pytest.fixture(autouse=True)
def fresh_keras_session():
    """Replaces conftest's: these tests read signatures, and clearing the
    Keras session after each of them would take most of their time."""
    yield


def missing_annotations(function):
    """The parameters of `function` without an annotation, and "return".

    `self` and `cls` need none; `*args` and `**kwargs` do.
    """
    signature = inspect.signature(function)
    missing = [
        name
        for name, parameter in signature.parameters.items()
        if name not in ("self", "cls")
        and parameter.annotation is inspect.Parameter.empty
    ]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


def test_the_walk_finds_the_public_api():
    names = {name for name, _ in PUBLIC_FUNCTIONS}
    # A function, a class's own method, a method and a property from a
    # keras_regkit base class, a Keras hook, a lazily imported module.
    for expected in (
        "keras_regkit._attach.regularize",
        "keras_regkit.regularizers.L2.from_weight_decay",
        "keras_regkit.regularizers._Penalty.scaled",
        "keras_regkit.layers._stochastic.StochasticLayer.rate.setter",
        "keras_regkit.callbacks._early_stopping.EarlyStopping.on_epoch_end",
        "keras_regkit.plot.plot_learning_curves",
        "keras_regkit.tuning.RegularizedHyperModel.fit",
    ):
        assert expected in names
    # Inherited from Keras, so not ours to annotate.
    assert "keras_regkit._sharpness_aware.SharpnessAware.fit" not in names


@pytest.mark.parametrize(
    "function",
    [f for _, f in PUBLIC_FUNCTIONS],
    ids=[n for n, _ in PUBLIC_FUNCTIONS],
)
def test_public_signature_is_annotated(function):
    missing = missing_annotations(function)
    assert not missing, (
        f"{function.__module__}.{function.__qualname__} has no annotation "
        f"for: {', '.join(missing)}"
    )


def test_a_missing_annotation_is_named():
    def partly(self, x: int, *args, key: str = "", **kwargs):
        return x

    assert missing_annotations(partly) == ["args", "kwargs", "return"]
