"""Where a weight's penalty is in force, and how to read, set and prox it.

A weight's penalty is normally its `variable.regularizer`, which Keras adds
to the loss. While proximal steps train the weight (`ProximalStep`, or
`shrink(method="penalty", proximal=True)`), the penalty is taken out of the
loss and held by a `ProximalConstraint` on the variable instead, which
applies the penalty's proximal operator after each optimizer update. Every
module that reads or changes penalties (`regularize`, `shrink`, the
callbacks) goes through this one, so that all of them agree on where the
penalty is.

Keras reads penalties and constraints when it traces a train step: after
a change, `refresh_compiled_functions` makes the next step trace anew.
"""

import keras
from keras import ops

from keras_regkit import regularizers, selectors


def current_penalty(variable):
    """The penalty of `variable`, also while proximal steps hold it."""
    constraint = variable.constraint
    if isinstance(constraint, ProximalConstraint):
        return constraint.regularizer
    return variable.regularizer


def set_penalty(variable, penalty):
    """Sets the penalty of `variable`, where it is in force.

    While proximal steps train the weight, that is the penalty of its
    proximal step (and the one put back when they end), not a loss term;
    otherwise `variable.regularizer`. A change takes effect when the train
    step is traced again.
    """
    constraint = variable.constraint
    if isinstance(constraint, ProximalConstraint):
        constraint.regularizer = penalty
        constraint.penalty = proximal_penalty(penalty)
    else:
        variable.regularizer = penalty


def scheduled_penalty(base, factor):
    """`base.scaled(factor)`, marked as a scheduled value of `base`.

    A scheduler that finds it on a weight (left there by a `fit` that
    raised: Keras then calls no `on_train_end`) takes `base` for the
    weight's penalty, never this scaled value.
    """
    penalty = base.scaled(factor)
    penalty._scheduled_from = base
    return penalty


def unscheduled(penalty):
    """The penalty `penalty` was scheduled from, or `penalty` itself."""
    return getattr(penalty, "_scheduled_from", penalty)


def restore_scheduled_penalties(model):
    """Puts the base penalty back on every weight holding a scheduled one.

    Returns:
        The number of weights restored.
    """
    restored = 0
    for variable in model.weights:
        penalty = current_penalty(variable)
        base = unscheduled(penalty)
        if base is not penalty:
            set_penalty(variable, base)
            restored += 1
    return restored


def refresh_compiled_functions(model):
    """Makes the next `fit`/`evaluate` trace a train/test step anew.

    Keras reads penalties and constraints when it traces a step. `fit` looks
    `model.train_function` up at every step, so a function rebuilt between
    epochs (or in `on_train_begin`) is used from the next step on.
    """
    if not isinstance(model, keras.Model):
        return
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)
    if getattr(model, "test_function", None) is not None:
        model.make_test_function(force=True)


def proximal_penalty(regularizer):
    """Our regularizer equal to `regularizer`, or `None` if it has no prox.

    Keras's own `L1`, `L2` and `L1L2` are the same penalties as our `L1`,
    `L2` and `ElasticNet`, so they are taken over too.
    """
    if hasattr(regularizer, "prox"):
        return regularizer
    keras_l1, keras_l2 = keras.regularizers.L1, keras.regularizers.L2
    if isinstance(regularizer, keras.regularizers.L1L2):
        return regularizers.ElasticNet(
            float(regularizer.l1), float(regularizer.l2)
        )
    if isinstance(regularizer, keras_l1):
        return regularizers.L1(float(regularizer.l1))
    if isinstance(regularizer, keras_l2):
        return regularizers.L2(float(regularizer.l2))
    return None


class ProximalConstraint:
    """A variable constraint that takes the penalty's proximal step.

    Keras applies a variable's constraint right after each optimizer update,
    inside the compiled train step on every backend, before the optimizer's
    iteration counter moves: `optimizer.learning_rate` read there is the
    rate of the update just made. The variable's own constraint (if any) is
    applied after the prox, so the weights still satisfy it.

    The constraint also keeps what it replaced (the variable's regularizer
    and constraint), so that `release_proximal_steps` can put them back even
    after a `fit` that raised.
    """

    def __init__(self, penalty, optimizer, regularizer, constraint):
        self.penalty = penalty
        self.optimizer = optimizer
        self.regularizer = regularizer
        self.constraint = constraint

    def __call__(self, w):
        step = ops.convert_to_tensor(self.optimizer.learning_rate)
        shrunk = self.penalty.prox(w, ops.cast(step, w.dtype))
        accumulation = self.optimizer.gradient_accumulation_steps
        if accumulation:
            # Keras applies constraints after every train step, also after
            # those in which `gradient_accumulation_steps` only accumulates
            # gradients: the proximal step goes with the updates alone, as
            # Keras decides them (the step counter, plus one, a multiple of
            # the accumulation steps).
            counter = ops.convert_to_tensor(_step_counter(self.optimizer))
            updates = ops.equal((counter + 1) % accumulation, 0)
            # Keras hands the constraint the variable itself.
            shrunk = ops.where(updates, shrunk, ops.convert_to_tensor(w))
        if self.constraint is not None:
            shrunk = self.constraint(shrunk)
        return shrunk


def _step_counter(optimizer):
    """The optimizer's count of train steps, accumulating ones included.

    With `gradient_accumulation_steps`, `optimizer.iterations` counts the
    updates (the steps divided by the accumulation steps); the count of
    steps it is computed from is the optimizer variable named "iteration".
    """
    for variable in optimizer.variables:
        if variable.name == "iteration":
            return variable
    raise RuntimeError(
        "ProximalStep cannot find the optimizer's step counter (its "
        "variable 'iteration'), which it needs to take proximal steps only "
        "on the steps that update the weights under "
        "`gradient_accumulation_steps`. Train without gradient accumulation, "
        "or report this with your Keras version."
    )


def proximal_targets(model, layers=None):
    """`(variable, penalty)` for each weight that can take proximal steps.

    Every trainable weight of the layers `layers` chooses (all when None)
    whose penalty has a proximal operator, each weight once.

    Raises:
        ValueError: when `layers` matches no layer, or no chosen weight has
            a penalty with a proximal operator (naming those without one).
    """
    if layers is None:
        chosen = selectors.walk(model)
    else:
        chosen = selectors.select(model, layers)
        if not chosen:
            raise ValueError(
                f"The selector {layers!r} (argument `layers`) matches no "
                "layer of the model."
            )
    targets, seen, without_prox = [], set(), []
    for path, layer in chosen:
        for variable in layer.trainable_weights:
            if id(variable) in seen or variable.regularizer is None:
                continue
            seen.add(id(variable))
            penalty = proximal_penalty(variable.regularizer)
            if penalty is None:
                without_prox.append(f"{path}/{variable.name}")
            else:
                targets.append((variable, penalty))
    if not targets:
        detail = (
            f" The penalties of {', '.join(without_prox)} have no "
            "proximal operator."
            if without_prox
            else ""
        )
        raise ValueError(
            "ProximalStep found no trainable weight with a penalty that "
            "has a proximal operator (a keras_regkit regularizer, or "
            f"Keras's L1, L2 or L1L2).{detail}"
        )
    return targets


def start_proximal_steps(model, targets):
    """Moves each target's penalty from the loss into proximal steps.

    Args:
        model: the compiled model whose optimizer takes the steps.
        targets: `(variable, penalty)` pairs, from `proximal_targets`.
    """
    for variable, penalty in targets:
        variable.constraint = ProximalConstraint(
            penalty, model.optimizer, variable.regularizer, variable.constraint
        )
        variable.regularizer = None
    refresh_compiled_functions(model)


def release_proximal_steps(model):
    """Puts back the penalties and constraints proximal steps replaced.

    Returns:
        The number of weights restored (0 when none was replaced).
    """
    restored = 0
    for variable in model.variables:
        constraint = variable.constraint
        if isinstance(constraint, ProximalConstraint):
            variable.regularizer = constraint.regularizer
            variable.constraint = constraint.constraint
            restored += 1
    if restored:
        refresh_compiled_functions(model)
    return restored
