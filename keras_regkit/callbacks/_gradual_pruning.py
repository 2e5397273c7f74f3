"""`GradualPruning`: magnitude pruning during `fit`, with no wrapper layers."""

import dataclasses
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_regkit import (
    _console,
    _masks,
    _penalty_state,
    _validation,
    selectors,
)
from keras_regkit.callbacks._copying import copy_without_run_state
from keras_regkit.pruning import PruningSchedule
from keras_regkit.selectors import LayerSelector

_RUN_STATE = ("_targets", "_epoch_start", "_last_step")


@dataclasses.dataclass
class _Masked:
    """A pruning target and the masks that hold its zeros."""

    target: _masks.Target
    mask: keras.Variable
    bias_mask: keras.Variable | None = None
    values: np.ndarray | None = None  # the mask's values; None: all ones


class MaskConstraint:
    """A variable constraint that multiplies the weight by a mask.

    Keras applies a variable's constraint right after each optimizer update,
    inside the compiled train step, so masked entries are exactly 0.0 after
    every update, whatever the optimizer (momentum, Adam's moments and
    AdamW's decay included). The weight's own constraint runs first.
    """

    def __init__(self, mask, constraint):
        self.mask = mask
        self.constraint = constraint

    def __call__(self, w):
        if self.constraint is not None:
            w = self.constraint(w)
        return ops.multiply(w, ops.cast(self.mask, w.dtype))


def _hold(variable, mask):
    """Puts a `MaskConstraint` on `variable`, innermost after a prox.

    Under `ProximalStep` the variable's constraint is a
    `ProximalConstraint`; the mask goes inside it, as the constraint it
    applies after the prox, so that both release in any order.
    """
    outer = variable.constraint
    if isinstance(outer, _penalty_state.ProximalConstraint):
        outer.constraint = MaskConstraint(mask, outer.constraint)
    else:
        variable.constraint = MaskConstraint(mask, outer)


def _release(variable):
    """Takes a `MaskConstraint` off `variable`; True if there was one."""
    outer = variable.constraint
    if isinstance(outer, MaskConstraint):
        variable.constraint = outer.constraint
        return True
    if isinstance(outer, _penalty_state.ProximalConstraint) and isinstance(
        outer.constraint, MaskConstraint
    ):
        outer.constraint = outer.constraint.constraint
        return True
    return False


def _numpy(variable):
    return ops.convert_to_numpy(variable)


class GradualPruning(keras.callbacks.Callback):
    """Magnitude pruning during `fit`, on every backend, nothing to strip.

    At each step the schedule marks (`schedule(step)` is `(True,
    sparsity)`), the smallest-magnitude entries of the chosen kernels are
    set to exactly 0.0 until `sparsity` of them are (Zhu & Gupta 2017,
    "To prune, or not to prune"), and a mask holds them at 0.0 through
    every later optimizer update, inside the compiled train step: the
    mask is the kernel variable's `constraint` while `fit` runs (composed
    with the kernel's own constraint, applied before it). No layer is
    wrapped: the model saves, loads and is used as the plain Keras model
    it is, with its zeros in its weights. The step is the optimizer's
    iteration count, so that a second `fit` (with `initial_epoch` or
    not) goes on with the schedule where the first left it, and a model
    loaded with its optimizer goes on as well: at the start of each `fit`
    the masks are rebuilt at the sparsity of the last pruning step.

    The sparsity is reached exactly at every pruning step: the number of
    zeros is `round(sparsity * entries)` per kernel (`scope="layer"`), or
    over all the chosen kernels together (`scope="global"`, which lets
    the layers that matter least lose the most); with a structure, to
    one group (unit or block). Entries pruned once are kept at zero
    (they score 0), so with a non-decreasing schedule masks only grow.

    Structures (see `structure`): `"units"` prunes whole output units of
    Dense, convolution and depthwise convolution layers (the RMS of a
    unit's weights ranks it; its bias is pruned with it), which
    `keras_regkit.compact` then removes from the model; `(rows, cols)`
    prunes blocks of the kernel seen as an inputs-by-outputs matrix,
    ranked by mean `|w|`, as TF-MOT's `block_size`; `"2:4"` (or any
    `"N:M"`) keeps the `N` largest of every `M` consecutive inputs of each
    output, the pattern sparse tensor cores run, at the fixed sparsity
    `(M - N) / M`: the schedule must then be a `ConstantSparsity` at that
    sparsity, and says only when to prune.

    Each epoch logs `sparsity`: the fraction of the chosen kernels'
    entries that are 0.0.

    Backends: on TensorFlow and PyTorch the masks are variables the train
    step reads, at no cost but the multiplication (1-3% of a small MLP's
    step, benchmarks/RESULTS.md). JAX's compiled step reads no state
    outside the model and the optimizer, so there each pruning step that
    changes a mask has the train step traced and compiled again: about
    0.5 s for a small MLP, 1 s for a small CNN, the cost of some 600 of
    their steps. On JAX, prune less often (a larger `frequency`); a
    constant schedule, once reached, changes no mask and costs nothing.
    With `steps_per_execution=k`, a pruning step inside a block of `k`
    steps happens at the block's first step after it.

    With `EarlyStopping(restore_best_weights=True)`, the weights restored
    are the best epoch's, at that epoch's sparsity: to end at the final
    sparsity, let the schedule reach it before early stopping can stop
    (`start_from_epoch`), or prune to it again with a `ConstantSparsity`.
    Frozen (non-trainable) kernels are not pruned.

    Limits. Keras calls no callback when `fit` raises: the masks then stay
    on the kernels (they keep the zeros through later updates) until the
    next `fit` with this callback or `GradualPruning.release(model)`.

    Args:
        schedule: a `keras_regkit.pruning.PruningSchedule`
            (`PolynomialDecay`, `ConstantSparsity`).
        layers: which layers' kernels to prune, as a selector (see
            `keras_regkit.selectors`); `None` means every kernel, of any
            kind (`kernel`, `recurrent_kernel`, `embeddings`, depthwise and
            pointwise kernels), as `regularize(kernel=...)` reaches them.
        scope: `"layer"` (each kernel to the schedule's sparsity) or
            `"global"` (all chosen kernels ranked together).
        structure: `None` (single weights), `"units"`, a block shape
            `(block_rows, block_cols)`, or `"N:M"` such as `"2:4"`.
        verbose: 0 or 1. With 1, prints the sparsity at each pruning step.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> from keras_regkit.pruning import ConstantSparsity
    >>> x = np.random.default_rng(0).normal(size=(64, 8))
    >>> y = x.sum(axis=1, keepdims=True)
    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras.layers.Dense(16, activation="relu", name="hidden"),
    ...     keras.layers.Dense(1, name="head"),
    ... ])
    >>> model.compile("adam", "mse")
    >>> pruning = GradualPruning(
    ...     ConstantSparsity(0.75, begin_step=0, frequency=4),
    ...     layers="hidden",
    ... )
    >>> history = model.fit(
    ...     x, y, batch_size=16, epochs=2, verbose=0, callbacks=[pruning]
    ... )
    >>> history.history["sparsity"]
    [0.75, 0.75]
    >>> kernel = keras.ops.convert_to_numpy(model.get_layer("hidden").kernel)
    >>> int((kernel == 0.0).sum()), kernel.size
    (96, 128)
    """

    def __init__(
        self,
        schedule: PruningSchedule,
        layers: LayerSelector | None = None,
        scope: str = "layer",
        structure: _masks.Structure = None,
        verbose: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(schedule, PruningSchedule):
            raise TypeError(
                "Invalid value received for argument `schedule`. Expected a "
                "keras_regkit.pruning.PruningSchedule (PolynomialDecay, "
                f"ConstantSparsity). Received: schedule={schedule!r}"
            )
        if layers is not None:
            selectors._check_selector(layers)
        self.schedule = schedule
        self.layers = layers
        self.scope = _validation.choice("scope", scope, ("layer", "global"))
        self.structure = structure
        self._structure = _masks.check_structure(structure)
        self.verbose = _validation.verbosity("verbose", verbose)
        _check_fixed_sparsity(self._structure, structure, schedule)
        self._targets: list[_Masked] | None = None
        self._epoch_start = 0
        self._last_step = -1

    def get_config(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "layers": self.layers,
            "scope": self.scope,
            "structure": self.structure,
            "verbose": self.verbose,
        }

    def __deepcopy__(self, memo):
        return copy_without_run_state(self, memo, _RUN_STATE)

    # -- fit ---------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        model = self.model
        self.release(model)
        self._targets = self._find_targets(model)
        for masked in self._targets:
            _hold(masked.target.kernel, masked.mask)
            if masked.bias_mask is not None:
                _hold(masked.target.bias, masked.bias_mask)
        step = int(_numpy(model.optimizer.iterations))
        self._last_step = step - 1
        resumed = _last_pruning_step(self.schedule, step - 1)
        if resumed is not None:
            # A later fit, or a model loaded mid-schedule: the masks the
            # last pruning step made, rebuilt from the zeros it left.
            self._prune(resumed)
        # `fit` built its train function before this callback ran.
        _penalty_state.refresh_compiled_functions(model)

    def on_epoch_begin(
        self, epoch: int, logs: dict[str, Any] | None = None
    ) -> None:
        # `self.model` brings JAX's training state back to the variables.
        self._epoch_start = int(_numpy(self.model.optimizer.iterations))

    def on_train_batch_begin(
        self, batch: int, logs: dict[str, Any] | None = None
    ) -> None:
        step = self._epoch_start + batch
        due = _last_pruning_step(self.schedule, step, after=self._last_step)
        self._last_step = step
        if due is not None:
            self.model  # noqa: B018 (brings JAX's state to the variables)
            changed = self._prune(due)
            if changed and keras.backend.backend() == "jax":
                # JAX traced the masks into the step as constants.
                self._model.make_train_function(force=True)

    def on_epoch_end(
        self, epoch: int, logs: dict[str, Any] | None = None
    ) -> None:
        if logs is not None:
            logs["sparsity"] = self.sparsity()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.release(self.model)
        self._targets = None

    # -- state -------------------------------------------------------------

    def sparsity(self) -> float | None:
        """The fraction of the pruned kernels' entries that are 0.0.

        Returns:
            A float; `None` outside `fit`.
        """
        if not self._targets:
            return None
        zeros = total = 0
        for masked in self._targets:
            values = _numpy(masked.target.kernel)
            zeros += int((values == 0.0).sum())
            total += values.size
        return zeros / total

    @staticmethod
    def release(model: keras.Model) -> int:
        """Takes off the masks `GradualPruning` put on the model's weights.

        `fit` does this by itself when it ends normally; call it after a
        `fit` that raised. The zeros stay in the weights; only later
        updates are no longer masked. Does nothing when no mask is on.

        Args:
            model: the model trained with `GradualPruning`.

        Returns:
            The number of weights released.
        """
        released = sum(_release(variable) for variable in model.variables)
        if released:
            _penalty_state.refresh_compiled_functions(model)
        return released

    # -- internals ---------------------------------------------------------

    def _find_targets(self, model):
        found = []
        for target in _masks.targets(model, self.layers, self._structure):
            name = target.name
            bias_mask = None
            if target.bias is not None:
                bias_mask = _ones_like(target.bias, f"{name}_bias_mask")
            mask = _ones_like(target.kernel, f"{name}_mask")
            found.append(_Masked(target, mask, bias_mask))
        return found

    def _prune(self, step):
        """Prunes to the schedule's sparsity at `step`.

        Returns:
            Whether any mask changed (a constant schedule, once reached,
            changes none: the pruned entries are the smallest, at 0).
        """
        assert self._targets is not None  # set by on_train_begin
        sparsity = self.schedule.sparsity(step)
        targets = [masked.target for masked in self._targets]
        kernels = [_numpy(target.kernel) for target in targets]
        new_masks = _masks.masks(
            kernels,
            sparsity,
            self._structure,
            self.scope,
            [target.unit_axes for target in targets],
        )
        changed = False
        for masked, kernel, mask in zip(
            self._targets, kernels, new_masks, strict=True
        ):
            if masked.values is not None and np.array_equal(
                masked.values, mask
            ):
                continue
            changed = True
            masked.values = mask
            masked.mask.assign(mask)
            masked.target.kernel.assign(kernel * mask)
            if masked.bias_mask is not None:
                keep = _masks.unit_mask(mask, masked.target.unit_axes)
                masked.bias_mask.assign(keep)
                bias = masked.target.bias
                assert bias is not None  # it has a mask
                bias.assign(_numpy(bias) * keep)
        if self.verbose:
            _console.write_line(
                f"\nStep {step}: GradualPruning pruned to sparsity "
                f"{self.sparsity():.4f} (target {sparsity:.4f})."
            )
        return changed


def _ones_like(variable, name):
    return keras.Variable(
        ops.ones(variable.shape, dtype=variable.dtype),
        trainable=False,
        name=name.replace("/", "_"),
    )


def _last_pruning_step(schedule, step, after=-1):
    """The last step in `(after, step]` at which `schedule` prunes, or None."""
    if step < schedule.begin_step:
        return None
    last = step if schedule.end_step < 0 else min(step, schedule.end_step)
    last -= (last - schedule.begin_step) % schedule.frequency
    return last if last > after and last >= schedule.begin_step else None


def _check_fixed_sparsity(structure, given, schedule):
    """Refuses a schedule whose sparsity an `N:M` structure cannot give."""
    fixed = _masks.fixed_sparsity(structure)
    if fixed is None:
        return
    steps = [schedule.begin_step, max(schedule.end_step, schedule.begin_step)]
    asked = [schedule.sparsity(step) for step in steps]
    if any(abs(value - fixed) > 1e-9 for value in asked):
        raise ValueError(
            f"structure={given!r} prunes to the fixed sparsity {fixed:g}, "
            f"but the schedule asks for {asked[-1]:g} (argument `schedule`: "
            f"{schedule!r}). Use ConstantSparsity({fixed:g}, ...), whose "
            "steps say when to prune."
        )
