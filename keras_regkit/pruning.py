"""Pruning schedules: how sparse a model's kernels should be at each step.

A schedule answers, for a training step, whether to prune at that step and
to what sparsity (the fraction of a kernel's entries that are exactly 0).
The two schedules have the arguments and the meaning of TensorFlow Model
Optimization's (`tfmot.sparsity.keras.PolynomialDecay` and
`ConstantSparsity`), which work only with Keras 2; these are plain Python
objects, the same on every backend, and serializable as Keras objects.

Pruning happens at the steps from `begin_step` to `end_step`, both included,
every `frequency` steps counted from `begin_step`; an `end_step` of -1
(`ConstantSparsity` only) never ends.

Example:

>>> schedule = PolynomialDecay(0.5, 0.9, begin_step=0, end_step=1000)
>>> schedule(0), schedule(500), schedule(1000)
((True, 0.5), (True, 0.85), (True, 0.9))
>>> schedule(150)  # not a multiple of `frequency` (100) after begin_step
(False, 0.65435)
"""

import numbers
from typing import Any, TypeVar

import keras
import numpy as np

from keras_regkit import _config, _validation
from keras_regkit._config import ConfigByKeys

_ScheduleT = TypeVar("_ScheduleT", bound="PruningSchedule")

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PruningSchedule",
]


class PruningSchedule(ConfigByKeys):
    """Base of the pruning schedules: `schedule(step) -> (prune, sparsity)`.

    Subclasses give `sparsity(step)`; `begin_step`, `end_step` and
    `frequency` decide the steps at which to prune.
    """

    begin_step = 0
    end_step = -1
    frequency = 1

    def __call__(self, step: int) -> tuple[bool, float]:
        """`(should_prune, sparsity)` at `step`, as TF-MOT's schedules give.

        Args:
            step: non-negative int, the training step (the optimizer's
                iteration count).
        """
        return self.should_prune(step), self.sparsity(step)

    def should_prune(self, step: int) -> bool:
        """Whether pruning happens at `step`."""
        step = _validation.non_negative_int("step", step)
        in_range = step >= self.begin_step and (
            self.end_step < 0 or step <= self.end_step
        )
        return in_range and (step - self.begin_step) % self.frequency == 0

    def sparsity(self, step: int) -> float:
        """The target sparsity at `step`, a float in [0, 1)."""
        raise NotImplementedError

    @classmethod
    def from_config(
        cls: type[_ScheduleT], config: dict[str, Any]
    ) -> _ScheduleT:
        return cls(**config)


def _steps(begin_step, end_step, frequency, *, endless):
    """`begin_step`, `end_step` and `frequency`, checked, as ints."""
    begin_step = _validation.non_negative_int("begin_step", begin_step)
    frequency = _validation.positive_int("frequency", frequency)
    if endless and end_step == -1 and not isinstance(end_step, bool):
        return begin_step, -1, frequency
    expected = f"an integer >= begin_step ({begin_step})"
    if endless:
        expected += ", or -1 to prune until training ends"
    message = (
        f"Invalid value received for argument `end_step`. Expected "
        f"{expected}. Received: end_step={end_step!r}"
    )
    if isinstance(end_step, (bool, np.bool_)) or not isinstance(
        end_step, numbers.Integral
    ):
        raise TypeError(message)
    if end_step < begin_step:
        raise ValueError(message)
    return begin_step, int(end_step), frequency


@keras.saving.register_keras_serializable(package=_config.PACKAGE)
class PolynomialDecay(PruningSchedule):
    """Sparsity rising from `initial_sparsity` to `final_sparsity`.

    Zhu and Gupta's gradual pruning schedule ("To prune, or not to prune",
    2017), cubic by default: with `p = clip((step - begin_step) / (end_step
    - begin_step), 0, 1)`,

        sparsity = final_sparsity + (initial_sparsity - final_sparsity)
                   * (1 - p) ** power

    so the sparsity rises fast at first, when the network has many
    redundant weights, then levels off at `final_sparsity`. Before
    `begin_step` it is `initial_sparsity`; from `end_step` on,
    `final_sparsity` (with `end_step == begin_step`, a step from one to the
    other at `begin_step`).

    Args:
        initial_sparsity: float in [0, 1), the sparsity at `begin_step`.
        final_sparsity: float in [0, 1), the sparsity from `end_step` on.
        begin_step: non-negative int, the first step that prunes.
        end_step: int >= `begin_step`, the last step that prunes.
        power: positive float, the exponent (3: Zhu and Gupta's cubic).
        frequency: positive int, prune every `frequency` steps.

    Example:

    >>> schedule = PolynomialDecay(0.0, 0.8, begin_step=100, end_step=300,
    ...                            power=1, frequency=50)
    >>> [schedule(step) for step in (50, 100, 150, 175, 300, 350)]
    [(False, 0.0), (True, 0.0), (True, 0.2), (False, 0.3), (True, 0.8),
     (False, 0.8)]
    """

    _config_keys = (
        "initial_sparsity",
        "final_sparsity",
        "begin_step",
        "end_step",
        "power",
        "frequency",
    )

    def __init__(
        self,
        initial_sparsity: float,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        power: float = 3,
        frequency: int = 100,
    ) -> None:
        self.initial_sparsity = _validation.rate(
            "initial_sparsity", initial_sparsity
        )
        self.final_sparsity = _validation.rate("final_sparsity", final_sparsity)
        self.begin_step, self.end_step, self.frequency = _steps(
            begin_step, end_step, frequency, endless=False
        )
        self.power = _validation.positive_float("power", power)

    def sparsity(self, step: int) -> float:
        step = _validation.non_negative_int("step", step)
        if self.end_step == self.begin_step:
            progress = 1.0 if step >= self.begin_step else 0.0
        else:
            progress = (step - self.begin_step) / (
                self.end_step - self.begin_step
            )
            progress = min(1.0, max(0.0, progress))
        return (
            self.final_sparsity
            + (self.initial_sparsity - self.final_sparsity)
            * (1.0 - progress) ** self.power
        )


@keras.saving.register_keras_serializable(package=_config.PACKAGE)
class ConstantSparsity(PruningSchedule):
    """The same sparsity at every pruning step.

    Args:
        target_sparsity: float in [0, 1).
        begin_step: non-negative int, the first step that prunes.
        end_step: int >= `begin_step`, the last step that prunes, or -1
            (the default) to prune until training ends.
        frequency: positive int, prune every `frequency` steps.

    Example:

    >>> schedule = ConstantSparsity(0.5, begin_step=10, frequency=5)
    >>> [schedule(step) for step in (5, 10, 12, 15, 10**6)]
    [(False, 0.5), (True, 0.5), (False, 0.5), (True, 0.5), (True, 0.5)]
    """

    _config_keys = ("target_sparsity", "begin_step", "end_step", "frequency")

    def __init__(
        self,
        target_sparsity: float,
        begin_step: int,
        end_step: int = -1,
        frequency: int = 100,
    ) -> None:
        self.target_sparsity = _validation.rate(
            "target_sparsity", target_sparsity
        )
        self.begin_step, self.end_step, self.frequency = _steps(
            begin_step, end_step, frequency, endless=True
        )

    def sparsity(self, step: int) -> float:
        _validation.non_negative_int("step", step)
        return self.target_sparsity
