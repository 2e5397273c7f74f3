"""`shrink`'s keyword arguments as one checked, frozen object.

`shrink` builds one for each call, and `WeightShrinkage` builds one when it
is constructed, so that a bad argument fails then rather than after
training. Each default is written here once; `shrink`'s signature reads
them from the class.
"""

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import keras

from keras_regkit import _masks, _validation, regularizers, selectors

METHODS = ("scale", "soft_threshold", "prune", "penalty")
SELECTIONS = ("best", "sparsest_within")
PRUNE_SCOPES = ("layer", "global")
MODES = ("auto", "min", "max")


@dataclasses.dataclass(frozen=True)
class ShrinkOptions:
    """`shrink`'s options, those that need no model, checked when built.

    The arguments are `shrink`'s (see its docstring for their meaning);
    each is checked and stored in a plain form: `levels` as a sorted tuple
    of floats without duplicates, flags as bools, numbers as Python
    numbers.

    Raises:
        ValueError, TypeError: naming the argument and the value received.
    """

    method: str
    levels: Iterable[float] | None = None
    layers: selectors.LayerSelector | None = None
    bias: bool = False
    monitor: str = "loss"
    mode: str = "auto"
    select: str = "best"
    tolerance: float = 0.01
    prune_scope: str = "layer"
    structure: _masks.Structure = None
    finetune_data: Any = None
    finetune_epochs: int = 1
    regularizer: str | Callable[[float], keras.regularizers.Regularizer] = "l1"
    proximal: bool = True
    batch_size: int | None = None
    verbose: int = 0

    def __post_init__(self):
        method = _validation.choice("method", self.method, METHODS)
        if self.layers is not None:
            selectors._check_selector(self.layers)
        if method == "penalty" and self.finetune_data is None:
            raise ValueError(
                "method='penalty' fine-tunes the model at each strength: "
                "pass `finetune_data`. Received: finetune_data=None"
            )
        if not isinstance(self.monitor, str):
            raise TypeError(
                "Invalid value received for argument `monitor`. Expected a "
                f"metric name. Received: monitor={self.monitor!r}"
            )
        checked = {
            "method": method,
            "batch_size": None
            if self.batch_size is None
            else _validation.positive_int("batch_size", self.batch_size),
            "levels": _check_levels(method, self.levels),
            "bias": _validation.flag("bias", self.bias),
            "mode": _validation.choice("mode", self.mode, MODES),
            "select": _validation.choice("select", self.select, SELECTIONS),
            "tolerance": _validation.non_negative_float(
                "tolerance", self.tolerance
            ),
            "prune_scope": _validation.choice(
                "prune_scope", self.prune_scope, PRUNE_SCOPES
            ),
        }
        _check_structure(self.structure, method, checked["bias"])
        if self.finetune_data is not None:
            data_arguments(self.finetune_data, "finetune_data")
        checked["finetune_epochs"] = _validation.positive_int(
            "finetune_epochs", self.finetune_epochs
        )
        _penalty_factory(self.regularizer)
        checked["proximal"] = _validation.flag("proximal", self.proximal)
        checked["verbose"] = _validation.verbosity(
            "verbose", self.verbose, (0, 1, 2)
        )
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @property
    def metric_key(self):
        """The key of `evaluate`'s results that `monitor` names."""
        return self.monitor.removeprefix("val_")

    @property
    def pruning_structure(self):
        """`structure` in `keras_regkit._masks`'s canonical form."""
        return _masks.check_structure(self.structure)

    @property
    def finetune_arguments(self):
        """`fit`'s data arguments for fine-tuning, or None without it."""
        if self.finetune_data is None:
            return None
        return data_arguments(self.finetune_data, "finetune_data")

    @property
    def finetuning(self):
        """Whether each level fine-tunes the model."""
        return self.method == "penalty" or self.finetune_data is not None

    def penalty(self, strength):
        """The penalty `method="penalty"` fine-tunes with at `strength`."""
        return _penalty_factory(self.regularizer)(strength)


def data_arguments(data, argument):
    """`validation_data`-like input as keyword arguments of `evaluate`/`fit`.

    Args:
        data: `(x,)`, `(x, y)`, `(x, y, sample_weight)` (a list too, as
            Keras's `fit` reads `validation_data`) or a dataset.
        argument: the argument's name, for error messages.
    """
    if data is None:
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected "
            "validation data: a tuple (x, y) or (x, y, sample_weight), or a "
            f"dataset. Received: {argument}=None"
        )
    if isinstance(data, list):
        data = tuple(data)  # as Keras's `fit` reads `validation_data`
    if isinstance(data, tuple):
        if not 1 <= len(data) <= 3:
            raise ValueError(
                f"Invalid value received for argument `{argument}`. A tuple "
                "must be (x,), (x, y) or (x, y, sample_weight). Received a "
                f"tuple of length {len(data)}."
            )
        names = ("x", "y", "sample_weight")[: len(data)]
        return dict(zip(names, data, strict=True))
    return {"x": data}


def _check_structure(structure, method, bias):
    """Refuses a `structure` that `shrink` cannot walk a path of."""
    canonical = _masks.check_structure(structure)
    if canonical is None:
        return
    if method != "prune":
        raise ValueError(
            f"structure={structure!r} applies to method='prune' only. "
            f"Received: method={method!r}"
        )
    if _masks.fixed_sparsity(canonical) is not None:
        raise ValueError(
            f"structure={structure!r} prunes to one fixed sparsity, but "
            "shrink tries a path of pruning fractions. Use "
            "callbacks.GradualPruning with ConstantSparsity instead."
        )
    if bias:
        raise ValueError(
            f"structure={structure!r} prunes kernels (and, for 'units', "
            "each unit's bias with it): leave `bias` False. Received: "
            "bias=True"
        )


def _check_levels(method, levels):
    """The levels as a sorted tuple of floats, each valid for `method`."""
    if levels is None:
        return None
    if isinstance(levels, (str, bytes)) or not hasattr(levels, "__iter__"):
        raise TypeError(
            "Invalid value received for argument `levels`. Expected a "
            f"sequence of numbers. Received: levels={levels!r}"
        )
    levels = list(levels)
    if not levels:
        raise ValueError(
            "Invalid value received for argument `levels`. Expected at least "
            "one level. Received: levels=[]"
        )
    checked = []
    for level in levels:
        if method == "prune":
            value = _validation.unit_interval_float("levels", level)
            if not 0.0 < value < 1.0:
                raise ValueError(
                    "Invalid value received for argument `levels`. Expected "
                    "pruning fractions in (0, 1). Received: "
                    f"levels={levels!r}"
                )
        else:
            value = _validation.positive_float("levels", level)
        checked.append(value)
    return tuple(sorted(set(checked)))


def _penalty_factory(regularizer):
    """A function from a strength to the penalty `method="penalty"` uses."""
    if callable(regularizer) and not isinstance(regularizer, str):
        return regularizer
    if regularizer not in regularizers.NAMES:
        raise ValueError(
            "Invalid value received for argument `regularizer`. Expected one "
            f"of {', '.join(repr(n) for n in regularizers.NAMES)}, or a "
            "function from a strength to a regularizer. Received: "
            f"regularizer={regularizer!r}"
        )
    return lambda strength: regularizers.with_strength(regularizer, strength)
