"""Adding, changing and removing penalties on models that already exist.

Keras keeps a weight's penalty in two places: the layer attribute
(`layer.kernel_regularizer`), which is what `get_config()` saves, and the
variable (`layer.kernel.regularizer`), which is what `model.losses` reads.
Setting only one of them either changes the saved file but not the loss, or
the loss but not the saved file (keras-team/keras#8413, #9106, #7688).
`regularize` sets both, on every chosen layer however deeply it is nested,
and rebuilds the model's compiled train and test functions so that the very
next `fit` or `evaluate` sees the change.
"""

import warnings
from typing import Any, TypeAlias

import keras
from keras import ops

from keras_regkit import _penalty_state, _saving, regularizers, selectors
from keras_regkit.selectors import LayerSelector


class _Unchanged:
    def __repr__(self):
        return "UNCHANGED"


UNCHANGED = _Unchanged()
"""Default of `regularize`'s penalty arguments: leave that weight alone."""

# A penalty argument of `regularize`: what `regularizers.get` takes, or
# UNCHANGED.
_PenaltyArgument: TypeAlias = regularizers._Identifier | _Unchanged

# role -> (layer attribute saved in the config, variable names to look for)
_ROLES = {
    "kernel": ("kernel_regularizer", ("kernel",)),
    "bias": ("bias_regularizer", ("bias",)),
    "recurrent": ("recurrent_regularizer", ("recurrent_kernel",)),
    "embeddings": ("embeddings_regularizer", ("embeddings",)),
    # SeparableConv names it "depthwise_kernel"; DepthwiseConv plain "kernel".
    "depthwise": ("depthwise_regularizer", ("depthwise_kernel", "kernel")),
    "pointwise": ("pointwise_regularizer", ("pointwise_kernel",)),
}
# Roles that `kernel=` also covers unless they are given their own penalty:
# they are the kernels of depthwise and separable convolutions.
_KERNEL_LIKE = ("depthwise", "pointwise")


def _roles_of(layer):
    """The roles a layer holds itself (as a plain attribute, not a property).

    RNN layers expose their cell's `kernel_regularizer` through read-only
    properties; the cell is where the attribute and the variables live.
    """
    own = vars(layer)
    return [role for role, (attribute, _) in _ROLES.items() if attribute in own]


def _variable(layer, role):
    """The layer's variable for `role`, or `None` when it has none (yet)."""
    for name in _ROLES[role][1]:
        candidate = getattr(layer, name, None)
        if isinstance(candidate, keras.Variable):
            return candidate
        # Layers whose property returns a computed tensor (LoRA, quantization)
        # still own the underlying variable under the same name.
        for variable in layer.weights:
            if variable.name == name:
                return variable
    return None


def _may_hold(layer, role):
    """Whether `layer` has a weight for `role`, or may get one when built.

    A built layer that keeps the attribute but has no such weight (a `Dense`
    with `use_bias=False`) does not count.
    """
    return not layer.built or _variable(layer, role) is not None


def _role_penalties(given, argument=None):
    """Maps each role to the penalty to set, resolving identifiers.

    Args:
        given: dict from role to identifier, `UNCHANGED` for roles to leave.
        argument: how error messages name the dict (`"rules['*']"`); `None`
            names each role as its own argument.

    Returns the mapping and the set of roles given explicitly (`kernel=` also
    covers the depthwise and pointwise kernels, implicitly).
    """
    chosen = {
        role: regularizers._resolve(
            value, role if argument is None else f"{argument}[{role!r}]"
        )
        for role, value in given.items()
        if value is not UNCHANGED
    }
    explicit = set(chosen)
    if "kernel" in chosen:
        for role in _KERNEL_LIKE:
            chosen.setdefault(role, chosen["kernel"])
    return chosen, explicit


def _rule_penalties(selector, spec):
    """`_role_penalties` for one rule's value."""
    argument = f"rules[{selector!r}]"
    # A dict without "class_name" is not a regularizer's config but a dict of
    # roles; a misspelt role must not be reported as an unreadable config.
    if isinstance(spec, dict) and "class_name" not in spec:
        if not spec or not set(spec) <= set(_ROLES):
            raise ValueError(
                f"Invalid value received for argument `{argument}`. Expected "
                "a penalty, or a non-empty dict from roles ("
                f"{', '.join(repr(role) for role in _ROLES)}) to penalties. "
                f"Received: {argument}={spec!r}"
            )
        return _role_penalties(spec, argument)
    return _role_penalties({"kernel": regularizers._resolve(spec, argument)})


def _parse(role_arguments, layers, rules):
    """Checks `regularize`'s arguments and turns them into a plan.

    Returns `(selectors, plans, explicit)`: an ordered list of selectors, and
    for each, the penalty of each role and the set of roles given explicitly.
    """
    if rules is None:
        chosen, given = _role_penalties(role_arguments)
        if not chosen:
            raise ValueError(
                "Nothing to change: pass at least one of `kernel`, `bias`, "
                "`recurrent`, `embeddings`, `depthwise`, `pointwise` (None "
                "removes a penalty), or `rules`."
            )
        if layers is not None:
            selectors._check_selector(layers)
        return ["*" if layers is None else layers], [chosen], [given]
    if layers is not None or any(
        value is not UNCHANGED for value in role_arguments.values()
    ):
        raise ValueError(
            "Pass either `rules`, or penalty arguments (`kernel`, `bias`, "
            "...) with an optional `layers` selector, not both. Received: "
            f"rules={rules!r}, layers={layers!r}"
        )
    if not isinstance(rules, dict):
        raise TypeError(
            "Invalid value received for argument `rules`. Expected a dict "
            f"from selectors to penalties. Received: rules={rules!r}"
        )
    if not rules:
        raise ValueError(
            "Invalid value received for argument `rules`. Expected at least "
            "one rule. Received: rules={}"
        )
    for selector in rules:
        selectors._check_selector(selector, name="rules")
    parsed = [_rule_penalties(key, spec) for key, spec in rules.items()]
    return list(rules), [p for p, _ in parsed], [e for _, e in parsed]


def _check_every_selector_matches(model, selector_list, matched, argument):
    for index, selector in enumerate(selector_list):
        if any(i == index for _, _, i in matched):
            continue
        if selectors.select(model, selector):
            what = "only layers that an earlier rule already chooses"
        else:
            what = "no layer"
        raise ValueError(
            f"The selector {selector!r} (argument `{argument}`) matches "
            f"{what}. Layers available: {selectors._available(model)}"
        )


def _assignments(matched, plans, explicit):
    """The `(layer, role, penalty)` changes to make.

    Returns them with the set of roles given explicitly that reach no weight.
    """
    changes = []
    # The roles that reach a weight; a depthwise or pointwise kernel that
    # takes its penalty from `kernel=` counts as "kernel".
    reached = set()
    for _, layer, index in matched:
        for role in _roles_of(layer):
            if role not in plans[index]:
                continue
            changes.append((layer, role, plans[index][role]))
            if _may_hold(layer, role):
                reached.add(role if role in explicit[index] else "kernel")
    return changes, set().union(*explicit) - reached


def set_weight_penalty(layer, variable, penalty):
    """Sets `penalty` on `variable` and on `layer`'s matching attribute."""
    variable.regularizer = penalty
    for role in _roles_of(layer):
        if _variable(layer, role) is variable:
            setattr(layer, _ROLES[role][0], penalty)


def _check_fits(layer, role, penalty):
    """Raises a `ValueError` if `penalty` cannot take `layer`'s weight.

    A `GroupLasso` groups along axes the weight must have: set on a 1-D
    bias with `axis=1`, it would fail only at the first `fit` step.
    """
    variable = _variable(layer, role)
    check = getattr(penalty, "_check_shape", None)
    if variable is None or check is None:
        return
    try:
        check(tuple(variable.shape))
    except ValueError as error:
        raise ValueError(
            f"Invalid value received for argument `{role}`: {penalty!r} "
            f"cannot penalise the {role} of layer {layer.name!r}, of shape "
            f"{tuple(variable.shape)}. {error}"
        ) from None


def _assign(layer, role, penalty, frozen):
    attribute, _ = _ROLES[role]
    setattr(layer, attribute, penalty)
    variable = _variable(layer, role)
    if variable is not None:
        variable.regularizer = penalty
        if penalty is not None and not variable.trainable:
            frozen.append(variable.path)


# How many layer paths a warning names before it says "and N more".
_NAMED_IN_WARNINGS = 12


def _warn_if_unsaved(model, changes):
    """Warns once about the changed layers `model.save()` would not keep."""
    settings = [(layer, _ROLES[role][0]) for layer, role, _ in changes]
    unsaved = {id(layer) for layer in _saving.unsaved_layers(model, settings)}
    if not unsaved:
        return
    paths = [
        path for path, layer in selectors.walk(model) if id(layer) in unsaved
    ]
    named = ", ".join(paths[:_NAMED_IN_WARNINGS])
    if len(paths) > _NAMED_IN_WARNINGS:
        named += f" and {len(paths) - _NAMED_IN_WARNINGS} more"
    warnings.warn(
        f"The penalties set on {len(paths)} layers will not be saved with "
        f"the model: {named}. Their parent layers (or the model) rebuild "
        "them from arguments that carry no penalty, so `keras.saving."
        "load_model` gives them back without it. To carry the penalties "
        "across: `keras_regkit.PenaltyPlan.of(model).save(path)`, then "
        "`keras_regkit.PenaltyPlan.load(path).apply(loaded_model)`.",
        UserWarning,
        stacklevel=3,
    )


def regularize(
    model: keras.layers.Layer,
    kernel: _PenaltyArgument = UNCHANGED,
    bias: _PenaltyArgument = UNCHANGED,
    recurrent: _PenaltyArgument = UNCHANGED,
    *,
    embeddings: _PenaltyArgument = UNCHANGED,
    depthwise: _PenaltyArgument = UNCHANGED,
    pointwise: _PenaltyArgument = UNCHANGED,
    layers: LayerSelector | None = None,
    rules: dict[Any, regularizers._Identifier] | None = None,
) -> keras.layers.Layer:
    """Adds, changes or removes weight penalties on an existing model.

    Works on built or unbuilt, Sequential, Functional, subclassed and nested
    models, pretrained ones included, without touching a weight. Each penalty
    argument takes a regularizer (ours or Keras's), a name or config dict
    understood by `keras_regkit.regularizers.get`, or `None` to remove the
    penalty; arguments left out leave that weight as it is (biases are left
    alone unless asked). After the call the penalties appear in
    `model.losses`, count in the very next `fit` or `evaluate`, and are saved
    with the model, those of `MultiHeadAttention`'s projections included
    (when they share one penalty, it becomes the layer's own
    `kernel_regularizer`). Where Keras cannot save them, because a layer
    rebuilds its sublayers from arguments that take no penalty (KerasHub's
    transformer layers and backbones, subclassed models that build their
    layers in `__init__`), a warning names those layers; carry the
    penalties across with a `keras_regkit.PenaltyPlan`.

    Penalties are set on trainable and frozen weights alike, but Keras counts
    only trainable ones; a warning says when a chosen weight is frozen.

    Args:
        model: the `keras.Model` (or `keras.layers.Layer`) to change in place.
            Pass the model you train: its compiled functions are rebuilt.
        kernel: penalty for the main kernels (Dense, EinsumDense, convolution
            and RNN cell input kernels), and for the depthwise and pointwise
            kernels of depthwise and separable convolutions unless
            `depthwise`/`pointwise` are given.
        bias: penalty for biases.
        recurrent: penalty for the recurrent kernels of LSTM, GRU and
            SimpleRNN cells.
        embeddings: penalty for `Embedding` matrices.
        depthwise: penalty for depthwise kernels.
        pointwise: penalty for pointwise kernels.
        layers: which layers to change, as a selector (name, glob pattern,
            layer class, predicate, or a list of these; see
            `keras_regkit.selectors`). `None` means every layer.
        rules: instead of the arguments above, an ordered mapping from
            selectors to penalties, such as
            `{"dense_in": L1(1e-4), "*": L2(1e-4)}`. The first rule that
            matches a layer decides its penalties. A rule's value is a
            penalty for the kernel role (as `kernel=` above), or a dict from
            role names (`"kernel"`, `"bias"`, `"recurrent"`, `"embeddings"`,
            `"depthwise"`, `"pointwise"`) to penalties.

    Returns:
        `model`, changed in place.

    Raises:
        ValueError: when nothing would change: no penalty argument given, a
            selector or rule that matches no layer (the message lists the
            layers available), or no chosen layer holding a requested weight.
        TypeError: for a model, selector or penalty of the wrong type.

    Example:

    >>> import keras
    >>> from keras_regkit import L1, L2
    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras.layers.Dense(16, name="dense_in"),
    ...     keras.layers.Dense(1, name="dense_out"),
    ... ])
    >>> _ = regularize(model, rules={"dense_in": L1(1e-4), "*": L2(1e-4)})
    >>> model.get_layer("dense_in").kernel_regularizer
    L1(l1=0.0001)
    >>> model.get_layer("dense_out").kernel.regularizer
    L2(l2=0.0001)
    >>> _ = regularize(model, kernel=None)  # remove them again
    >>> len(model.losses)
    0
    """
    selectors._check_model(model)
    role_arguments = {
        "kernel": kernel,
        "bias": bias,
        "recurrent": recurrent,
        "embeddings": embeddings,
        "depthwise": depthwise,
        "pointwise": pointwise,
    }
    selector_list, plans, explicit = _parse(role_arguments, layers, rules)
    matched = selectors._first_match(selector_list, model)
    argument = "layers" if rules is None else "rules"
    _check_every_selector_matches(model, selector_list, matched, argument)
    # Everything is checked before the first change, so that an error leaves
    # the model as it was.
    changes, missing = _assignments(matched, plans, explicit)
    if missing:
        raise ValueError(
            "No chosen layer holds a weight of the kind "
            f"{', '.join(repr(role) for role in sorted(missing))}. "
            f"Layers available: {selectors._available(model)}"
        )
    for layer, role, penalty in changes:
        _check_fits(layer, role, penalty)
    frozen: list[str] = []
    for layer, role, penalty in changes:
        _assign(layer, role, penalty, frozen)
    _warn_if_unsaved(model, changes)
    if frozen:
        warnings.warn(
            "Penalties were set on frozen (non-trainable) weights, which "
            "Keras leaves out of `model.losses` until they are trainable: "
            f"{', '.join(frozen)}.",
            UserWarning,
            stacklevel=2,
        )
    _penalty_state.refresh_compiled_functions(model)
    return model


def penalties(
    model: keras.layers.Layer, head_norms: bool = False
) -> dict[str, dict[str, Any]]:
    """The current weight penalties of a model, as plain floats.

    Lists every trainable weight that has a penalty, exactly the weight terms
    Keras adds to `model.losses`, under the path of the layer that owns it.

    Args:
        model: a `keras.Model` or `keras.layers.Layer`.
        head_norms: when True, each weight's entry is a dict instead of a
            float: `{"penalty": p}`, plus `"head_norms"`, the L2 norm of
            each attention head's slice (head 0 first), for a weight whose
            penalty is a `GroupLasso` with `heads`. A head whose norm is
            exactly 0.0 is switched off.

    Returns:
        A dict `{layer_path: {weight_name: penalty}}` in layer order, e.g.
        `{"dense": {"kernel": 0.0123}}`; empty when nothing is penalised.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_regkit import L1, GroupLasso
    >>> layer = keras.layers.Dense(
    ...     2, kernel_initializer="ones", kernel_regularizer=L1(0.5),
    ...     name="dense",
    ... )
    >>> layer.build((3,))
    >>> penalties(layer)  # 0.5 * 6 weights of 1
    {'dense': {'kernel': 3.0}}

    Per-head norms of an attention layer's kernels, with its second head
    switched off:

    >>> attention = keras.layers.MultiHeadAttention(
    ...     num_heads=2, key_dim=3, name="attention",
    ...     kernel_regularizer=GroupLasso(0.1, heads=2),
    ... )
    >>> attention.build((1, 3, 4), (1, 3, 4))
    >>> query = attention.query_dense.kernel  # (hidden 4, 2 heads, 3)
    >>> _ = query.assign(np.stack([np.ones((4, 3)), np.zeros((4, 3))], 1))
    >>> found = penalties(attention, head_norms=True)
    >>> norms = found["attention/query"]["kernel"]["head_norms"]
    >>> [round(norm, 4) for norm in norms]  # sqrt(12), then 0
    [3.4641, 0.0]
    """
    selectors._check_model(model)
    if not isinstance(head_norms, bool):
        raise TypeError(
            f"penalties: head_norms must be True or False. Received: "
            f"head_norms={head_norms!r}"
        )
    found: dict[str, dict[str, Any]] = {}
    for path, _, variable in owned_weights(model):
        penalty = variable.regularizer
        if not variable.trainable or penalty is None:
            continue
        value: float | dict[str, Any]
        value = float(ops.convert_to_numpy(penalty(variable)))
        if head_norms:
            value = {"penalty": value}
            if isinstance(penalty, regularizers.GroupLasso) and penalty.heads:
                norms = penalty.group_norms(variable)
                value["head_norms"] = [float(norm) for norm in norms]
        found.setdefault(path, {})[variable.name] = value
    return found


def owned_weights(model):
    """Every weight of `model` with the path of the layer that owns it.

    A weight belongs to the innermost layer that holds it, as in
    `keras_regkit.penalties`; weights a model holds itself, outside any of
    its layers, are listed under the model's name.

    Returns:
        A list of `(path, layer, variable)` in `selectors.walk` order.
    """
    owners = selectors.walk(model)
    # A layer holds its sublayers' weights too, so the innermost holder of
    # a weight is the one that holds the fewest, the deepest on a tie (a
    # model of one layer holds just what it holds). Not the last one in
    # `walk` order: a layer shared by two sub-models comes under the first,
    # before the second sub-model that holds its weights too.
    owner_of: dict[int, tuple[tuple[int, int], int]] = {}
    for path, layer in owners:
        rank = (len(layer.weights), -path.count("/"))
        for variable in layer.weights:
            held = owner_of.get(id(variable))
            if held is None or rank < held[0]:
                owner_of[id(variable)] = (rank, id(layer))
    owned, listed = [], set()
    for path, layer in owners:
        for variable in layer.weights:
            mine = owner_of[id(variable)][1] == id(layer)
            if mine and id(variable) not in listed:
                listed.add(id(variable))
                owned.append((path, layer, variable))
    own = [v for v in model.weights if id(v) not in owner_of]
    return [(model.name, model, v) for v in own] + owned


def selected_weights(model, layers=None, bias=False):
    """The trainable weights that a `regularize` call would reach.

    Kernels of every kind (`kernel`, `recurrent`, `embeddings`, `depthwise`,
    `pointwise`), and biases only when asked, of the layers `layers`
    chooses, each weight once.

    Args:
        model: a `keras.Model` or `keras.layers.Layer`, built.
        layers: a selector (see `keras_regkit.selectors`); `None` means
            every layer.
        bias: whether biases are included.

    Returns:
        A list of `(name, variable)` in layer order, `name` being the layer
        path and the weight name joined by `/` (`"dense/kernel"`).

    Raises:
        ValueError: when `layers` matches no layer, or the layers chosen
            hold no such weight.
    """
    return [
        (f"{path}/{variable.name}", variable)
        for path, _, _, variable in selected_layer_weights(model, layers, bias)
    ]


def selected_layer_weights(model, layers=None, bias=False):
    """`selected_weights`, as `(path, layer, role, variable)` tuples.

    `role` is the weight's role in its layer: `"kernel"`, `"bias"`,
    `"recurrent"`, `"embeddings"`, `"depthwise"` or `"pointwise"`.
    """
    selectors._check_model(model)
    if layers is None:
        chosen = selectors.walk(model)
    else:
        selectors._check_selector(layers)
        chosen = selectors.select(model, layers)
        if not chosen:
            raise ValueError(
                f"The selector {layers!r} (argument `layers`) matches no "
                f"layer. Layers available: {selectors._available(model)}"
            )
    found, seen = [], set()
    for path, layer in chosen:
        for role in _roles_of(layer):
            if role == "bias" and not bias:
                continue
            variable = _variable(layer, role)
            if variable is None or not variable.trainable:
                continue
            if id(variable) not in seen:
                seen.add(id(variable))
                found.append((path, layer, role, variable))
    if not found:
        raise ValueError(
            "The layers chosen hold no trainable kernel"
            f"{' or bias' if bias else ''}. Layers available: "
            f"{selectors._available(model)}"
        )
    return found
