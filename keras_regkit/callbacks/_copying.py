"""Deep copies of callbacks that leave the model and its run state behind."""

import copy
from collections.abc import Collection
from typing import Any, TypeVar

_T = TypeVar("_T")


def copy_without_run_state(
    callback: _T,
    memo: dict[int, Any],
    run_state: Collection[str],
    shared: Collection[str] = (),
) -> _T:
    """A deep copy of `callback` without the model or its run state.

    The attributes named in `run_state` (references to the model's layers
    and variables, iterators) and the model itself are set to None in the
    copy: it starts fresh, and `fit` gives it its model. Those in `shared`
    (large, read-only data) are shared rather than copied. Keras Tuner
    deep-copies the callbacks of every trial, and copying a model along is
    wasteful at best.

    For a callback's `__deepcopy__(self, memo)`.
    """
    copied = type(callback).__new__(type(callback))
    memo[id(callback)] = copied
    for key, value in vars(callback).items():
        if key == "_model" or key in run_state:
            setattr(copied, key, None)
        elif key in shared:
            setattr(copied, key, value)
        else:
            setattr(copied, key, copy.deepcopy(value, memo))
    return copied
