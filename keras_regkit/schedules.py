"""Dropout rate schedules: functions of the epoch for `DropoutScheduler`.

Each schedule is a callable `schedule(epoch) -> rate`, with `epoch` counted
from 0 as Keras counts it. They are plain, deep-copyable objects with a
config, so callbacks holding them survive keras-tuner's per-trial copies.

Example:

>>> from keras_regkit import schedules
>>> ramp = schedules.LinearRamp(0.0, 0.5, epochs=5)
>>> [round(ramp(epoch), 2) for epoch in range(7)]
[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.5]
"""

import math
import numbers
from typing import Any, TypeVar

import keras
import numpy as np

from keras_regkit import _config, _validation
from keras_regkit._config import ConfigByKeys

_ScheduleT = TypeVar("_ScheduleT", bound="_Schedule")

__all__ = [
    "Constant",
    "Curriculum",
    "LinearRamp",
]


def _epoch(epoch):
    if isinstance(epoch, (bool, np.bool_)) or not isinstance(
        epoch, numbers.Integral
    ):
        raise TypeError(
            "Invalid value received for argument `epoch`. Expected a "
            f"non-negative integer. Received: epoch={epoch!r}"
        )
    if epoch < 0:
        raise ValueError(
            "Invalid value received for argument `epoch`. Expected a "
            f"non-negative integer. Received: epoch={epoch!r}"
        )
    return int(epoch)


class _Schedule(ConfigByKeys):
    """Base of the schedules: a config from `_config_keys`."""

    @classmethod
    def from_config(
        cls: type[_ScheduleT], config: dict[str, Any]
    ) -> _ScheduleT:
        return cls(**config)


@keras.saving.register_keras_serializable(package=_config.PACKAGE)
class Constant(_Schedule):
    """The same rate at every epoch.

    Args:
        rate: float in [0, 1).

    Example:

    >>> Constant(0.3)(10)
    0.3
    """

    _config_keys = ("rate",)

    def __init__(self, rate: float) -> None:
        self.rate = _validation.rate("rate", rate)

    def __call__(self, epoch: int) -> float:
        _epoch(epoch)
        return self.rate


@keras.saving.register_keras_serializable(package=_config.PACKAGE)
class LinearRamp(_Schedule):
    """A rate going in a straight line from `start` to `stop`, then staying.

    `rate(t) = start + (stop - start) * min(t, epochs) / epochs`: `start` at
    epoch 0, `stop` from epoch `epochs` on. It can ramp down as well as up.

    Args:
        start: float in [0, 1), the rate at epoch 0.
        stop: float in [0, 1), the rate from epoch `epochs` on.
        epochs: int >= 1, the length of the ramp.

    Example:

    >>> [LinearRamp(0.4, 0.0, epochs=2)(t) for t in range(4)]
    [0.4, 0.2, 0.0, 0.0]
    """

    _config_keys = ("start", "stop", "epochs")

    def __init__(self, start: float, stop: float, epochs: int) -> None:
        self.start = _validation.rate("start", start)
        self.stop = _validation.rate("stop", stop)
        self.epochs = _validation.positive_int("epochs", epochs)

    def __call__(self, epoch: int) -> float:
        progress = min(_epoch(epoch), self.epochs) / self.epochs
        return self.start + (self.stop - self.start) * progress


@keras.saving.register_keras_serializable(package=_config.PACKAGE)
class Curriculum(_Schedule):
    """Curriculum dropout: no dropout at first, rising towards `max_rate`.

    `rate(t) = max_rate * (1 - exp(-gamma * t))` (Morerio et al.,
    "Curriculum dropout", ICCV 2017, eq. 4, written for the drop rate rather
    than the keep probability). Early epochs learn from clean inputs, later
    ones are regularized harder. The paper counts `t` in iterations; here it
    counts epochs, so `gamma` is per epoch: the rate is within 1% of
    `max_rate` after `log(100) / gamma` (about `4.6 / gamma`) epochs. The
    paper's `gamma = 10 / T` over `T` updates becomes `10 / epochs`.

    Args:
        max_rate: float in [0, 1), the rate approached at the end.
        gamma: positive float, how fast the rate rises, per epoch.

    Example:

    >>> schedule = Curriculum(0.5, gamma=1.0)
    >>> [round(schedule(t), 3) for t in range(4)]
    [0.0, 0.316, 0.432, 0.475]
    """

    _config_keys = ("max_rate", "gamma")

    def __init__(self, max_rate: float, gamma: float) -> None:
        self.max_rate = _validation.rate("max_rate", max_rate)
        self.gamma = _validation.positive_float("gamma", gamma)

    def __call__(self, epoch: int) -> float:
        return self.max_rate * -math.expm1(-self.gamma * _epoch(epoch))
