"""Changes the strengths of weight penalties from epoch to epoch."""

import math
from typing import Any

import keras

from keras_regkit import _attach, _console, _penalty_state, selectors
from keras_regkit._penalty_state import current_penalty, set_penalty
from keras_regkit.callbacks._copying import copy_without_run_state
from keras_regkit.callbacks._scheduling import EpochScheduler

_RUN_STATE = ("_targets", "_current", "_targets_model")


class _Target:
    """One penalised weight the scheduler scales, and its base penalty.

    The base is the weight's penalty as the user set it: a scaled value a
    scheduler left on the weight (after a `fit` that raised) is never taken
    for it, the penalty it was scaled from is.
    """

    def __init__(self, path, layer, variable):
        self.path = path
        self.layer = layer
        self.variable = variable
        self.base = _penalty_state.unscheduled(current_penalty(variable))

    def set(self, penalty):
        set_penalty(self.variable, penalty)

    def restore(self):
        set_penalty(self.variable, self.base)


class PenaltyScheduler(EpochScheduler):
    """Scales the strengths of weight penalties at the start of every epoch.

    At the beginning of each epoch `schedule(epoch)` gives a factor, and the
    penalty of every chosen weight becomes its penalty as it was when
    training began, with its strengths multiplied by the factor
    (`regularizer.scaled(factor)`): a schedule going from 0 to 1 warms any
    penalty up, elastic net's two strengths together. The scaled penalty is
    set where `model.losses` reads it (`variable.regularizer`). The layer's
    configuration (`kernel_regularizer`, ..., what `get_config()` and
    `model.save` write) keeps the penalty as the user set it, so that a
    checkpoint written during training, or a model saved after a `fit` that
    raised, holds the user's penalty, which a scheduler resuming from it
    scales again. Only trainable weights are scheduled: Keras counts no
    other penalty.

    Keras compiles the strengths into the train step, so when a factor
    changes, the model's compiled train and test functions are rebuilt and
    traced again at their next call: the new penalty counts from that
    epoch's first step on (`fit` looks `model.train_function` up at every
    step). Epochs whose factors are those of the previous epoch cost
    nothing, and a constant schedule never causes a new trace.

    On JAX, a rebuilt step is traced again only if nothing holds on to the
    previous `model.train_function`: JAX reuses the traces of
    `jax.jit(model.train_step)` for as long as any function jitted from
    that method is alive. Neither `fit` nor this callback keeps one; code
    that stores `model.train_function` somewhere would make the new
    strengths silently not count.

    When training begins, the schedule is evaluated for every epoch from 0
    to `epochs - 1` (Keras does not tell callbacks the `initial_epoch`), so
    that a bad factor at epoch 40 fails before the first step, with the
    model untouched. The schedule must therefore be a function of the epoch
    alone.

    When training ends, every penalty is put back as it was. If `fit`
    raises or is interrupted, Keras calls no callback (no `on_train_end`),
    so nothing can put them back at once: the scaled penalties then stay in
    the loss of the model's next `evaluate` or `fit` until a scheduler
    restores them: `restore()` (`restore(model)` puts back every penalty
    any scheduler left on `model`), or the next `fit` with this or any
    other `PenaltyScheduler` over those weights, which takes the user's
    penalty for its base, never the scaled one it finds (re-running a
    notebook cell is safe). Their saved configuration never changes.
    Wrap `fit` in `try: ... finally: scheduler.restore()` to leave nothing
    scaled behind.

    Only keras_regkit regularizers can be scaled (they have a `scaled`
    method); a chosen weight with another penalty is a `TypeError`. Use one
    scheduler per weight: two would each set their own factor.

    Args:
        schedule: callable, `schedule(epoch) -> factor`, `epoch` counted
            from 0 as in `keras.callbacks.LearningRateScheduler`. It returns
            a non-negative finite float for every chosen weight, or a dict
            mapping selectors (layer names, paths, glob patterns, classes,
            predicates) to factors: the first key that matches a layer, or a
            layer enclosing it, decides its factor, as in
            `regularize(rules=...)`; weights no key matches keep their
            current factor (1 until a key sets another), and a key that
            matches no scheduled layer is an error. `DropoutScheduler`
            reads its dicts the same way.
        layers: which layers' penalties to schedule: None (the default) for
            every penalised trainable weight of the model, or a selector
            (see `keras_regkit.selectors`).
        verbose: 0 or 1. With 1, prints the factors whenever they change.

    When every scheduled weight has the same factor, the epoch's logs get it
    as `penalty_factor`.

    Example:

    >>> import keras, numpy as np
    >>> from keras_regkit import L2
    >>> from keras_regkit.callbacks import PenaltyScheduler
    >>> model = keras.Sequential([
    ...     keras.Input((3,)),
    ...     keras.layers.Dense(1, kernel_regularizer=L2(0.01), name="dense"),
    ... ])
    >>> model.compile("sgd", "mse")
    >>> warm_up = PenaltyScheduler(lambda epoch: min(1.0, epoch / 2))
    >>> history = model.fit(
    ...     np.ones((8, 3)), np.ones((8, 1)), epochs=4, verbose=0,
    ...     callbacks=[warm_up],
    ... )
    >>> history.history["penalty_factor"]
    [0.0, 0.5, 1.0, 1.0]
    >>> model.get_layer("dense").kernel_regularizer  # restored
    L2(l2=0.01)
    """

    _value_name = "factor"
    _expected = "a non-negative finite float"

    @staticmethod
    def _accept(factor):
        return math.isfinite(factor) and factor >= 0.0

    # Run state, while `fit` runs: the scheduled weights, their factors
    # by layer path, and the model they belong to.
    _targets: list[_Target] | None = None
    _current: dict[str, float] | None = None
    _targets_model: keras.Model | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.restore()  # what a previous `fit` that raised left behind
        targets = self._find_targets()
        # Check everything before the first change.
        for epoch in range((self.params or {}).get("epochs") or 0):
            self._factors(epoch, targets)
        # Scaled penalties another scheduler's interrupted `fit` left.
        left = [t for t in targets if current_penalty(t.variable) is not t.base]
        for target in left:
            target.restore()
        if left:
            _penalty_state.refresh_compiled_functions(self.model)
        self._targets = targets
        self._targets_model = self.model
        self._current = {target.path: 1.0 for target in targets}

    def on_epoch_begin(
        self, epoch: int, logs: dict[str, Any] | None = None
    ) -> None:
        assert self._targets is not None and self._current is not None
        factors = self._factors(epoch, self._targets)
        changed = {
            path: factor
            for path, factor in factors.items()
            if factor != self._current[path]
        }
        if not changed:
            return
        scaled: dict[tuple[int, float], Any] = {}
        for target in self._targets:
            if target.path in changed:
                target.set(
                    self._scaled(target.base, changed[target.path], scaled)
                )
        self._current.update(changed)
        _penalty_state.refresh_compiled_functions(self.model)
        if self.verbose:
            _console.write_line(
                f"\nEpoch {epoch + 1}: PenaltyScheduler {self._described()}."
            )

    def on_epoch_end(
        self, epoch: int, logs: dict[str, Any] | None = None
    ) -> None:
        if logs is None or not self._current:
            return
        factors = set(self._current.values())
        if len(factors) == 1:
            logs["penalty_factor"] = factors.pop()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.restore()

    def __deepcopy__(self, memo):
        return copy_without_run_state(self, memo, _RUN_STATE)

    def restore(self, model: keras.Model | None = None) -> None:
        """Puts back the penalties the model had when training began.

        `fit` calls it when training ends; call it yourself after a `fit`
        that raised. Does nothing when there is nothing to restore.

        Args:
            model: None to restore what this scheduler changed; or a model,
                to put back every scaled penalty any `PenaltyScheduler`
                left on it (when the scheduler that left them is gone).
        """
        if model is not None:
            if _penalty_state.restore_scheduled_penalties(model):
                _penalty_state.refresh_compiled_functions(model)
        if self._targets is None:
            return
        for target in reversed(self._targets):
            target.restore()
        assert self._current is not None  # set with `_targets`
        if any(factor != 1.0 for factor in self._current.values()):
            _penalty_state.refresh_compiled_functions(self._targets_model)
        # Hold no reference to the model's layers.
        self._targets = None
        self._current = None
        self._targets_model = None

    def _described(self):
        """What the factors are now, for `verbose=1`."""
        assert self._current is not None
        factors = set(self._current.values())
        if len(factors) == 1:
            return f"set the penalty factor to {factors.pop():.4g}"
        described = ", ".join(
            f"{path}={factor:.4g}" for path, factor in self._current.items()
        )
        return f"set the penalty factors {described}"

    @staticmethod
    def _scaled(base, factor, cache):
        """`base.scaled(factor)`, the same object for a shared `base`."""
        if factor == 1.0:
            return base
        key = (id(base), factor)
        if key not in cache:
            cache[key] = _penalty_state.scheduled_penalty(base, factor)
        return cache[key]

    def _find_targets(self):
        """The penalised trainable weights this callback schedules."""
        model = self.model
        weights = _attach.owned_weights(model)
        if self.layers is not None:
            chosen = selectors.select(model, self.layers)
            if not chosen:
                raise ValueError(
                    f"PenaltyScheduler: the selector {self.layers!r} "
                    "(argument `layers`) matches no layer of model "
                    f"{model.name!r}. Layers available: "
                    f"{selectors._available(model)}"
                )
            ids = {id(layer) for _, layer in chosen}
            weights = [entry for entry in weights if id(entry[1]) in ids]
        trainable = {id(v) for v in model.trainable_weights}
        targets = [
            _Target(path, layer, variable)
            for path, layer, variable in weights
            if id(variable) in trainable
            and current_penalty(variable) is not None
        ]
        if not targets:
            where = (
                "" if self.layers is None else f" among layers {self.layers!r}"
            )
            raise ValueError(
                "PenaltyScheduler found no trainable weight with a penalty"
                f"{where} in model {model.name!r}. Add penalties first, with "
                "`kernel_regularizer=...` or `keras_regkit.regularize`."
            )
        for target in targets:
            if not callable(getattr(target.base, "scaled", None)):
                raise TypeError(
                    "PenaltyScheduler can only scale keras_regkit "
                    f"regularizers. Layer {target.path!r} has the penalty "
                    f"{target.base!r} ({type(target.base).__name__}) on its "
                    f"weight {target.variable.name!r}. Use the keras_regkit "
                    "regularizer of the same name (`keras_regkit.L2`, ...), "
                    "or leave that layer out with `layers=`."
                )
        return targets

    def _factors(self, epoch, targets):
        """`{layer path: factor}` for `epoch`; raises on a bad factor."""
        return self._scheduled(epoch, [target.path for target in targets])
