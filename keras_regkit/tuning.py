"""Searching regularization with keras-tuner: penalties and dropout rates.

`hp_regularizer` and `hp_dropout` add a penalty or a dropout rate to any
keras-tuner search space in one line; `RegularizedHyperModel` turns a
function that builds an unregularized model into a hypermodel that searches
the penalty of every layer, or one shared penalty, on its own.

This module needs keras-tuner: `pip install "keras-regkit[tuner]"` (which
also installs `tensorboard`, without which every trial of a keras-tuner
search fails on the TensorFlow backend). `import keras_regkit` does not
import it.
"""

import copy
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import keras

try:
    import keras_tuner
except ImportError as error:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "keras_regkit.tuning needs keras-tuner. Install it with: "
        'pip install "keras-regkit[tuner]"'
    ) from error

from keras_regkit import _attach, _validation, regularizers, selectors
from keras_regkit.callbacks._early_stopping import EarlyStopping
from keras_regkit.callbacks._weight_shrinkage import WeightShrinkage
from keras_regkit.selectors import LayerSelector

__all__ = [
    "DEFAULT_KINDS",
    "KINDS",
    "RegularizedHyperModel",
    "hp_dropout",
    "hp_regularizer",
]

KINDS = ("none", "l1", "l2", "elastic_net", "exp_abs", "group_lasso")
"""The penalty kinds `hp_regularizer` can search."""

DEFAULT_KINDS = ("none", "l1", "l2", "elastic_net", "exp_abs")
"""The kinds `hp_regularizer` and `RegularizedHyperModel` search by default."""


def _check_kinds(kinds):
    if isinstance(kinds, str) or not hasattr(kinds, "__iter__"):
        raise TypeError(
            "Invalid value received for argument `kinds`. Expected a list of "
            f"penalty kinds. Received: kinds={kinds!r}"
        )
    kinds = tuple(kinds)
    if not kinds:
        raise ValueError(
            "Invalid value received for argument `kinds`. Expected at least "
            "one kind. Received: kinds=()"
        )
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise ValueError(
            "Invalid value received for argument `kinds`. Unknown kinds: "
            f"{', '.join(repr(k) for k in unknown)}. Valid kinds: "
            f"{', '.join(repr(k) for k in KINDS)}. Received: kinds={kinds!r}"
        )
    if len(set(kinds)) != len(kinds):
        raise ValueError(
            "Invalid value received for argument `kinds`. A kind is listed "
            f"twice. Received: kinds={kinds!r}"
        )
    return kinds


def _check_order(min_value, max_value):
    """Raises unless `min_value <= max_value`; returns both."""
    if min_value > max_value:
        raise ValueError(
            "Invalid value received for arguments `min_value` and "
            "`max_value`. Expected min_value <= max_value. Received: "
            f"min_value={min_value!r}, max_value={max_value!r}"
        )
    return min_value, max_value


def _check_range(min_value, max_value):
    """Checks a range of strengths: positive, in order."""
    return _check_order(
        _validation.positive_float("min_value", min_value),
        _validation.positive_float("max_value", max_value),
    )


def _penalty(kind, strength, l1_ratio):
    if kind == "elastic_net":
        return regularizers.ElasticNet.from_ratio(strength, l1_ratio)
    return regularizers.with_strength(kind, strength)


def hp_regularizer(
    hp: keras_tuner.HyperParameters,
    name: str = "regularizer",
    kinds: Iterable[str] = DEFAULT_KINDS,
    min_value: float = 1e-6,
    max_value: float = 1e-1,
) -> keras.regularizers.Regularizer | None:
    """Registers a penalty choice in a keras-tuner search space.

    Registers the choice `name` among `kinds` and, for each kind that has a
    strength, the log-sampled strength `f"{name}_{kind}_strength"` in
    `[min_value, max_value]`, inside `hp.conditional_scope`: a strength
    exists in a trial only when its kind is chosen, so Bayesian optimization
    and grid search see no phantom parameters. Elastic net also gets its
    `f"{name}_elastic_net_l1_ratio"` in [0, 1]; it is built with
    `ElasticNet.from_ratio(strength, l1_ratio)` (scikit-learn's
    parametrization). Call it in a model-building function, as many times
    as there are independent choices, each with its own `name`.

    Args:
        hp: the `keras_tuner.HyperParameters` of the trial.
        name: the name of the choice; the prefix of its strengths.
        kinds: the kinds to choose from, among `"none"`, `"l1"`, `"l2"`,
            `"elastic_net"`, `"exp_abs"` and `"group_lasso"`.
        min_value: positive float, the smallest strength.
        max_value: positive float, the largest strength.

    Returns:
        The keras_regkit regularizer of the trial, or `None` for `"none"`.

    Example:

    >>> import keras_tuner
    >>> hp = keras_tuner.HyperParameters()
    >>> hp_regularizer(hp, kinds=["l2"], min_value=1e-4, max_value=1e-4)
    L2(l2=0.0001)
    >>> sorted(hp.values)
    ['regularizer', 'regularizer_l2_strength']
    """
    _check_name(name)
    kinds = _check_kinds(kinds)
    min_value, max_value = _check_range(min_value, max_value)
    kind = hp.Choice(name, list(kinds))
    chosen = None
    for candidate in kinds:
        if candidate == "none":
            continue
        with hp.conditional_scope(name, [candidate]):
            strength = hp.Float(
                f"{name}_{candidate}_strength",
                min_value=min_value,
                max_value=max_value,
                sampling="log",
            )
            l1_ratio = None
            if candidate == "elastic_net":
                l1_ratio = hp.Float(
                    f"{name}_elastic_net_l1_ratio", 0.0, 1.0, default=0.5
                )
            if candidate == kind:
                chosen = _penalty(kind, strength, l1_ratio)
    return chosen


def hp_dropout(
    hp: keras_tuner.HyperParameters,
    name: str = "dropout",
    min_value: float = 0.0,
    max_value: float = 0.5,
    step: float = 0.1,
) -> float:
    """Registers a dropout rate in a keras-tuner search space.

    Args:
        hp: the `keras_tuner.HyperParameters` of the trial.
        name: the name of the rate.
        min_value: float in [0, 1), the smallest rate.
        max_value: float in [0, 1), the largest rate.
        step: positive float, the spacing of the rates tried.

    Returns:
        The rate of the trial, a float, for `keras_regkit.layers.Dropout`
        or `keras.layers.Dropout`.

    Example:

    >>> import keras_tuner
    >>> hp = keras_tuner.HyperParameters()
    >>> hp_dropout(hp, min_value=0.2, max_value=0.4)
    0.2
    """
    _check_name(name)
    min_value, max_value = _check_order(
        _validation.rate("min_value", min_value),
        _validation.rate("max_value", max_value),
    )
    step = _validation.positive_float("step", step)
    return hp.Float(name, min_value=min_value, max_value=max_value, step=step)


def _check_name(name):
    """Refuses a hyperparameter name that is not a non-empty string."""
    if not isinstance(name, str):
        raise TypeError(
            "Invalid value received for argument `name`. Expected a "
            f"non-empty string. Received: name={name!r}"
        )
    if not name:
        raise ValueError(
            "Invalid value received for argument `name`. Expected a "
            f"non-empty string. Received: name={name!r}"
        )


def _checkpoint_shrunk_model(history, callbacks):
    """Shows keras-tuner's checkpoints the shrunk model as one more epoch.

    keras-tuner scores a trial by the best entry of its History, and saves
    the trial's weights at the end of each epoch that improves its
    objective (its `SaveBestEpoch` callback); `get_best_models()` loads
    them. `WeightShrinkage` shrinks when training ends, after the last
    epoch end, and appends the shrunk model's figures to the History: the
    tuner scores that entry, but no checkpoint holds its weights. Handed
    that entry as the epoch it stands for, the checkpoint saves the shrunk
    weights exactly when the tuner scores them best, so that the best model
    a search returns is the one it scored.
    """
    if not history.epoch:
        return
    logs = {key: values[-1] for key, values in history.history.items()}
    for callback in callbacks:
        if _is_trial_checkpoint(callback):
            callback.on_epoch_end(history.epoch[-1], logs)


def _is_trial_checkpoint(callback):
    """Whether `callback` is keras-tuner's per-trial `SaveBestEpoch`.

    keras-tuner does not export the class, so it is known by its name and
    package (`tests/test_tuning.py` fails if a release renames it).
    """
    kind = type(callback)
    return kind.__name__ == "SaveBestEpoch" and kind.__module__.startswith(
        "keras_tuner."
    )


def _takes_hp(build_model):
    """Whether `build_model` takes the trial's hyperparameters."""
    try:
        parameters = inspect.signature(build_model).parameters
    except (TypeError, ValueError):
        return True
    required = [
        p
        for p in parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return bool(required) or any(
        p.kind == p.VAR_POSITIONAL for p in parameters.values()
    )


class RegularizedHyperModel(keras_tuner.HyperModel):
    """A hypermodel that searches the penalties of the model you build.

    Give it your own function that builds and compiles an unregularized
    model (taking the trial's `hp`, or nothing); each trial builds it, then
    attaches the penalties the trial chose with `keras_regkit.regularize`:
    one shared choice (`per_layer=False`) among the selected layers, or one
    choice per selected layer (`per_layer=True`, named
    `regularizer/<layer path>`). Your compile settings are kept.

    Its `fit` can also run `keras_regkit.callbacks.EarlyStopping` and
    `WeightShrinkage` in every trial (fresh copies each time), so that the
    objective is measured on the model they leave.

    Args:
        build_model: callable returning a compiled `keras.Model`, called as
            `build_model(hp)` when it takes an argument, else
            `build_model()`.
        per_layer: one penalty choice per selected layer, or one shared.
        kinds: penalty kinds to search (see `hp_regularizer`).
        layers: the layers to regularize, a selector (see
            `keras_regkit.selectors`); `None` means every layer with a
            kernel.
        min_value: positive float, smallest strength searched.
        max_value: positive float, largest strength searched.
        early_stopping: `None`, or a `keras_regkit.callbacks.EarlyStopping`
            to run in every trial.
        shrinkage: `None`, or a `WeightShrinkage` to run in every trial
            (after early stopping).
        name: the hypermodel's name.
        tunable: passed to `keras_tuner.HyperModel`.

    Example:

    >>> import keras, keras_tuner
    >>> def build():
    ...     model = keras.Sequential([
    ...         keras.Input((4,)), keras.layers.Dense(8, name="hidden"),
    ...         keras.layers.Dense(1, name="out"),
    ...     ])
    ...     model.compile("sgd", "mse")
    ...     return model
    >>> hypermodel = RegularizedHyperModel(build, kinds=["l2"])
    >>> model = hypermodel.build(keras_tuner.HyperParameters())
    >>> model.get_layer("hidden").kernel_regularizer
    L2(l2=1e-06)
    """

    def __init__(
        self,
        build_model: Callable[..., keras.Model],
        *,
        per_layer: bool = False,
        kinds: Iterable[str] = DEFAULT_KINDS,
        layers: LayerSelector | None = None,
        min_value: float = 1e-6,
        max_value: float = 1e-1,
        early_stopping: keras.callbacks.EarlyStopping
        | EarlyStopping
        | None = None,
        shrinkage: WeightShrinkage | None = None,
        name: str | None = None,
        tunable: bool = True,
    ) -> None:
        super().__init__(
            name=name, tunable=_validation.flag("tunable", tunable)
        )
        if not callable(build_model):
            raise TypeError(
                "Invalid value received for argument `build_model`. Expected "
                "a function returning a compiled keras.Model. Received: "
                f"build_model={build_model!r}"
            )
        if layers is not None:
            selectors._check_selector(layers)
        if early_stopping is not None and not isinstance(
            early_stopping, keras.callbacks.EarlyStopping | EarlyStopping
        ):
            raise TypeError(
                "Invalid value received for argument `early_stopping`. "
                "Expected an EarlyStopping callback or None. Received: "
                f"early_stopping={early_stopping!r}"
            )
        if shrinkage is not None and not isinstance(shrinkage, WeightShrinkage):
            raise TypeError(
                "Invalid value received for argument `shrinkage`. Expected "
                "a keras_regkit.callbacks.WeightShrinkage or None. "
                f"Received: shrinkage={shrinkage!r}"
            )
        self.build_model = build_model
        self.per_layer = _validation.flag("per_layer", per_layer)
        self.kinds = _check_kinds(kinds)
        self.min_value, self.max_value = _check_range(min_value, max_value)
        self.layers = layers
        self.early_stopping = early_stopping
        self.shrinkage = shrinkage

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        if _takes_hp(self.build_model):
            model = self.build_model(hp)
        else:
            model = self.build_model()
        if not isinstance(model, keras.Model):
            raise TypeError(
                "RegularizedHyperModel's `build_model` must return a "
                f"keras.Model. It returned {model!r} of type "
                f"{type(model).__name__}."
            )
        targets = self._targets(model)
        if self.per_layer:
            for path, layer in targets:
                penalty = self._choice(hp, f"regularizer/{path}")
                if penalty is not None:
                    _attach.regularize(
                        model, kernel=penalty, layers=_exactly(layer)
                    )
        else:
            penalty = self._choice(hp, "regularizer")
            if penalty is not None:
                chosen = [layer for _, layer in targets]
                _attach.regularize(model, kernel=penalty, layers=_among(chosen))
        return model

    def fit(
        self,
        hp: keras_tuner.HyperParameters,
        model: keras.Model,
        *args: Any,
        callbacks: Iterable[keras.callbacks.Callback] | None = None,
        **kwargs: Any,
    ) -> keras.callbacks.History:
        callbacks = list(callbacks or [])
        for extra in (self.early_stopping, self.shrinkage):
            if extra is not None:
                callbacks.append(copy.deepcopy(extra))
        history = model.fit(*args, callbacks=callbacks, **kwargs)
        if self.shrinkage is not None:
            _checkpoint_shrunk_model(history, callbacks)
        return history

    def _choice(self, hp, name):
        return hp_regularizer(
            hp,
            name=name,
            kinds=self.kinds,
            min_value=self.min_value,
            max_value=self.max_value,
        )

    def _targets(self, model):
        """The `(path, layer)` pairs whose kernels get the penalties."""
        names = {
            name.rsplit("/", 1)[0]
            for name, _ in _attach.selected_weights(model, self.layers)
        }
        return [
            (path, layer)
            for path, layer in selectors.walk(model)
            if path in names
        ]


def _exactly(target):
    return lambda layer: layer is target


def _among(targets):
    ids = {id(layer) for layer in targets}
    return lambda layer: id(layer) in ids
