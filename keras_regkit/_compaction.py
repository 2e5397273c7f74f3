"""Compaction: a smaller model without the units that training zeroed.

Structured pruning, and group penalties trained with proximal steps
(`GroupLasso` with `callbacks.ProximalStep`), set whole units to exactly
zero: a column of a Dense kernel, a filter of a convolution. Such a unit is
dead: whatever its input, it outputs the constant `activation(bias)` at
every position (0 for ReLU with a zero bias, as structured pruning leaves
it, but 0.5 for a sigmoid; `GroupLasso` leaves the bias as it was
trained). It still costs memory and compute, and `compact` builds a new
model without it.

A dead unit is not silent, though. `compact` follows that
constant through the layers that keep a channel a channel
(BatchNormalization, activations, dropout and noise, pooling, Flatten,
Concatenate, elementwise merges such as Add) to the next layer with a
kernel, and there cuts the kernel's input rows. A nonzero constant is folded
into that layer's bias where this is exact: a Dense, or a convolution with
`padding="valid"`. Where it is not, a "same"-padded convolution (its border
positions see zero padding, not the constant), a layer without bias, a
layer `compact` does not see through, or the model's output, the unit stays
and, with `verbose=1`, the log says why. The compact model therefore makes
the same predictions as the original, up to float rounding.
"""

import dataclasses
import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_regkit import _console
from keras_regkit import layers as _regkit_layers

# A constant this small is 0: the consumer's input rows are cut, no fold.
_ZERO = 1e-12

# Activations that act on each entry alone, so that a constant channel stays
# a constant channel. Softmax, log-softmax, sparsemax and GLU mix channels.
_ELEMENTWISE_ACTIVATION_NAMES = (
    "celu",
    "elu",
    "exponential",
    "gelu",
    "hard_shrink",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "hard_tanh",
    "leaky_relu",
    "linear",
    "log_sigmoid",
    "mish",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "soft_shrink",
    "softplus",
    "softsign",
    "sparse_plus",
    "sparse_sigmoid",
    "squareplus",
    "swish",
    "tanh",
    "tanh_shrink",
    "threshold",
)
_ELEMENTWISE_ACTIVATIONS = tuple(
    getattr(keras.activations, name)
    for name in _ELEMENTWISE_ACTIVATION_NAMES
    if hasattr(keras.activations, name)
)

# Layer kinds, matched by exact class: a subclass may compute something else.
_DENSE = (keras.layers.Dense,)
_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_BATCH_NORM = (keras.layers.BatchNormalization,)
# Elementwise layers, evaluated on the constants.
_ACTIVATION_LAYERS = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
)
# The identity at inference.
_INFERENCE_IDENTITY = (
    keras.layers.Identity,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
)
# keras_regkit's dropout layers: the identity at inference unless `mc=True`.
_REGKIT_NOISE = (_regkit_layers.Dropout, _regkit_layers.DropPath)
# A constant channel stays that constant, whatever the padding (Keras's
# average pooling leaves padded positions out of the mean).
_POOLING = (
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
)
# Elementwise merges: what each makes of its inputs' constants.
_MERGES: dict[type, Callable[[np.ndarray], Any]] = {
    keras.layers.Add: np.sum,
    keras.layers.Subtract: lambda values: values[0] - values[1],
    keras.layers.Multiply: np.prod,
    keras.layers.Average: np.mean,
    keras.layers.Maximum: np.max,
    keras.layers.Minimum: np.min,
}


def dead_units(model: keras.Model) -> dict[str, list[int]]:
    """The units, filters and channels that `compact` would remove.

    A dry run of `compact`, which leaves the model unchanged.

    Args:
        model: a built Sequential or Functional `keras.Model`.

    Returns:
        A dict: the name of each layer that would lose output units (Dense
        units, Conv1D/Conv2D filters) -> the sorted list of their indices.
        Layers that lose none are left out.

    Raises:
        TypeError: if `model` is not a `keras.Model`.
        ValueError: if `model` is subclassed, not built, or holds a nested
            model.

    Example:

    >>> import keras
    >>> from keras_regkit import dead_units
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(3, activation="relu", name="hidden"),
    ...     keras.layers.Dense(1, name="output"),
    ... ])
    >>> kernel, bias = model.get_layer("hidden").get_weights()
    >>> kernel[:, 2] = 0.0  # the bias starts at 0: unit 2 is dead
    >>> model.get_layer("hidden").set_weights([kernel, bias])
    >>> dead_units(model)
    {'hidden': [2]}
    """
    _check_model(model)
    plan = _plan(model)
    return {
        name: sorted(cut.outputs)
        for name, cut in plan.cuts.items()
        if cut.outputs
    }


def compact(model: keras.Model, verbose: int = 1) -> keras.Model:
    """A new, smaller model without the units whose weights are all zero.

    A unit of a Dense layer, a filter of a Conv1D or Conv2D, is dead when
    its kernel slice is all exactly zero, as `GroupLasso` trained with
    `callbacks.ProximalStep`, structured pruning (`GradualPruning` or
    `shrink` with `structure="units"`, which zero the bias too) leave it.
    `compact` removes it, and cuts what it fed: the kernel rows of the next
    Dense or convolution, the channels of a BatchNormalization or
    DepthwiseConv2D on the way. Its constant output `activation(bias)`
    (after what lies between: BatchNormalization,
    activations, dropout, pooling, Flatten, Concatenate, Add and the other
    elementwise merges) is folded into the next layer's bias where that is
    exact (a Dense, or a "valid"-padded convolution). The compact model
    predicts what the original predicts, up to float rounding. (In training
    they differ a little: a dropout layer on the way dropped the dead
    unit's constant at random, and now the constant is in the bias.)

    A dead unit stays where removing it would not be exact: its constant is
    nonzero and reaches a "same"- or "causal"-padded convolution or a layer
    without bias; it reaches a layer that `compact` does not see through
    (LayerNormalization, Reshape, a custom layer...), a merge whose other
    inputs are not constant in that channel, or the model's output (the
    units of output layers always stay). With `verbose=1` the log names
    the kept units and why.

    The original model is not changed. The new one is a plain Keras model
    with the same layer names and configs, except the smaller `units` and
    `filters`; it saves, loads and trains as usual. It is not compiled:
    compile it before `fit` or `evaluate`.

    Args:
        model: a built Sequential or Functional `keras.Model`. Layers used
            more than once are left as they are.
        verbose: 0 or 1. With 1, prints a line for each layer that changes,
            each layer with dead units that stay, and the parameter count
            before and after.

    Returns:
        A new `keras.Model`, Sequential for a Sequential, Functional for a
        Functional, uncompiled, with the original's weights cut to the
        units that remain.

    Raises:
        TypeError: if `model` is not a `keras.Model`, or `verbose` is not
            an integer.
        ValueError: if `model` is subclassed, not built, or holds a nested
            model, or `verbose` is not 0 or 1.

    Example:

    >>> import keras, numpy as np
    >>> from keras_regkit import compact
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(3, activation="relu", name="hidden"),
    ...     keras.layers.Dense(1, name="output"),
    ... ])
    >>> kernel, bias = model.get_layer("hidden").get_weights()
    >>> kernel[:, 1] = 0.0  # the bias starts at 0: unit 1 is dead
    >>> model.get_layer("hidden").set_weights([kernel, bias])
    >>> small = compact(model)
    hidden: 3 -> 2 units (1 removed)
    output: 3 -> 2 inputs
    Parameters: 19 -> 13 (6 removed)
    >>> small.get_layer("hidden").units
    2
    >>> x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    >>> bool(np.allclose(small.predict(x, verbose=0),
    ...                  model.predict(x, verbose=0), atol=1e-5))
    True
    """
    verbose = _check_verbose(verbose)
    _check_model(model)
    plan = _plan(model)
    new_model = _rebuild(model, plan)
    _copy_weights(model, new_model, plan)
    if verbose:
        _print_log(model, new_model, plan)
    return new_model


# --- Argument checks -------------------------------------------------------


def _invalid(name, expected, value):
    return (
        f"Invalid value received for argument `{name}`. Expected {expected}. "
        f"Received: {name}={value!r}"
    )


def _check_verbose(verbose):
    if isinstance(verbose, (bool, np.bool_)) or not isinstance(
        verbose, numbers.Integral
    ):
        raise TypeError(_invalid("verbose", "0 or 1", verbose))
    if verbose not in (0, 1):
        raise ValueError(_invalid("verbose", "0 or 1", verbose))
    return int(verbose)


def _is_functional(model):
    """Whether `model` is Keras's own Functional class, not a subclass."""
    cls = type(model)
    return cls.__name__ == "Functional" and cls.__module__.startswith("keras.")


def _check_model(model):
    expected = "a built Sequential or Functional keras.Model"
    if not isinstance(model, keras.Model):
        raise TypeError(_invalid("model", expected, model))
    if type(model) is not keras.Sequential and not _is_functional(model):
        raise ValueError(
            _invalid("model", expected, model)
            + f". `{type(model).__name__}` is a subclassed model: compact "
            "needs a model whose layers and their connections it can read"
        )
    if not model.built:
        raise ValueError(
            _invalid("model", expected, model)
            + ". Build it first: start it with `keras.Input`, call "
            "`model.build(input_shape)`, or call it on data"
        )
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise ValueError(
                _invalid("model", expected, model)
                + f". Its layer `{layer.name}` is a nested model, whose "
                "units compact cannot cut; compact the nested model on its "
                "own"
            )


# --- The model's graph, read from its config -------------------------------


@dataclasses.dataclass
class _Call:
    """One call of a layer in the model's graph.

    `inputs` and `shapes` are the keys `(layer name, node, tensor)` and the
    shapes of its input tensors; `output` is the key of its first output.
    `plain` is false when the call passes anything compact must respect
    (other arguments, `training=True`), or the layer is called more than
    once (then none of its calls is changed).
    """

    layer: keras.layers.Layer
    inputs: list
    shapes: list
    merged: bool
    plain: bool
    output: tuple


def _functional_view(model):
    """An uncompiled Functional model of the same layers and graph.

    Made from the model's own input and output tensors: no layer is called
    again, nothing is added to the original.
    """
    if type(model) is keras.Sequential:
        (inputs,), (outputs,) = model.inputs, model.outputs
    else:
        inputs, outputs = model.input, model.output
    with warnings.catch_warnings():
        # Keras would repeat the warnings it gave when the model was made.
        warnings.simplefilter("ignore", UserWarning)
        return keras.Model(inputs, outputs, name=model.name)


def _graph_config(model):
    """The Functional config that lists each layer's input tensors."""
    view = _functional_view(model)
    return view, view.get_config()


def _serialized_tensors(structure):
    """The serialized Keras tensors in a node's arguments, in order."""
    if isinstance(structure, dict):
        if structure.get("class_name") == "__keras_tensor__":
            return [structure["config"]]
        return [t for v in structure.values() for t in _serialized_tensors(v)]
    if isinstance(structure, (list, tuple)):
        return [t for v in structure for t in _serialized_tensors(v)]
    return []


def _tensor_keys(structure):
    """The `[layer name, node, tensor]` triples of `output_layers`."""
    if (
        isinstance(structure, (list, tuple))
        and len(structure) == 3
        and isinstance(structure[0], str)
    ):
        return [tuple(structure)]
    if isinstance(structure, dict):
        return [k for v in structure.values() for k in _tensor_keys(v)]
    if isinstance(structure, (list, tuple)):
        return [k for v in structure for k in _tensor_keys(v)]
    return []


def _is_plain_call(node):
    """A call on one tensor or a list of tensors, nothing else passed.

    `training=False` and `mask=None` (which Keras records for layers that
    take a mask) change nothing at inference.
    """
    args, kwargs = node["args"], node["kwargs"]
    quiet = {"training": (None, False), "mask": (None,)}
    if any(v not in quiet.get(k, ()) for k, v in kwargs.items()):
        return False
    if len(args) != 1:
        return False
    single = args[0]
    if isinstance(single, list):
        return len(_serialized_tensors(single)) == len(single)
    return len(_serialized_tensors([single])) == 1


def _calls(model):
    """The layer calls of `model`, each after the calls it takes input from.

    Returns:
        `(calls, output keys, {name: layer})`.
    """
    view, config = _graph_config(model)
    # Operations: a Functional model may also call `keras.ops` functions.
    layers = {operation.name: operation for operation in view.operations}
    calls = []
    for entry in config["layers"]:
        layer = layers[entry["name"]]
        nodes = entry["inbound_nodes"]
        for index, node in enumerate(nodes):
            tensors = _serialized_tensors([node["args"], node["kwargs"]])
            calls.append(
                _Call(
                    layer=layer,
                    inputs=[tuple(t["keras_history"]) for t in tensors],
                    shapes=[tuple(t["shape"]) for t in tensors],
                    merged=bool(node["args"])
                    and isinstance(node["args"][0], list),
                    plain=len(nodes) == 1 and _is_plain_call(node),
                    output=(layer.name, index, 0),
                )
            )
    outputs = _tensor_keys(config["output_layers"])
    return _in_graph_order(calls), outputs, layers


def _in_graph_order(calls):
    """`calls` sorted so that each comes after those that feed it."""
    produced = {call.output[:2] for call in calls}
    ready: set[Any] = set()
    ordered = []
    pending = list(calls)
    while pending:
        waiting = []
        for call in pending:
            needed = {key[:2] for key in call.inputs} & produced
            if needed <= ready:
                ordered.append(call)
                ready.add(call.output[:2])
            else:
                waiting.append(call)
        if len(waiting) == len(pending):  # a cycle: cannot happen in Keras
            raise ValueError("compact could not order the model's layers")
        pending = waiting
    return ordered


# --- The plan: which units go, and what they cut ---------------------------


@dataclasses.dataclass
class _Cut:
    """What changes in one layer.

    `outputs`: its own output units removed (Dense units, Conv filters).
    `inputs`: kernel input row -> the constant it received, folded into the
    bias before the row is cut (Dense, Conv). `channels`: the channels cut
    from a BatchNormalization, or the input channels of a depthwise
    convolution (with their `depth_multiplier` outputs).
    """

    outputs: set = dataclasses.field(default_factory=set)
    inputs: dict = dataclasses.field(default_factory=dict)
    channels: set = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class _Plan:
    """The outcome of the analysis.

    `cuts`: layer name -> `_Cut`, only for layers that change. `kept`:
    layer name -> {reason: [constants]}, one constant per dead unit of that
    layer that stays.
    """

    cuts: dict
    kept: dict


class _Groups:
    """Sets of dead units that must go together, or stay together.

    Each dead unit starts a group of its own. A merge such as Add joins the
    groups of a channel in all its inputs: the channel goes from all of
    them or from none. A group collects the weight cuts its removal makes
    (`effects`) and the reasons it must stay (`reasons`).
    """

    def __init__(self):
        self._parent = {}
        self._effects = {}
        self._reasons = {}

    def new(self):
        group = len(self._parent)
        self._parent[group] = group
        self._effects[group] = []
        self._reasons[group] = []
        return group

    def root(self, group):
        while self._parent[group] != group:
            self._parent[group] = self._parent[self._parent[group]]
            group = self._parent[group]
        return group

    def join(self, groups):
        roots = sorted({self.root(g) for g in groups})
        first = roots[0]
        for other in roots[1:]:
            self._parent[other] = first
            self._effects[first] += self._effects.pop(other)
            self._reasons[first] += self._reasons.pop(other)
        return first

    def add_effect(self, group, effect):
        self._effects[self.root(group)].append(effect)

    def keep(self, group, reason):
        self._reasons[self.root(group)].append(reason)

    def effects(self, group):
        return self._effects[self.root(group)]

    def reasons(self, group):
        return self._reasons[self.root(group)]

    def roots(self):
        return [g for g in self._parent if self._parent[g] == g]


def _numpy(variable):
    """A float64 copy of a variable's value."""
    return np.array(ops.convert_to_numpy(variable), dtype="float64")


def _kind_name(layer):
    return type(layer).__name__


def _a_kind(layer):
    """`"a Dense"`, `"an Add"`: the layer's class with its article."""
    name = _kind_name(layer)
    article = "an" if name[0] in "AEIOU" else "a"
    return f"{article} {name}"


def _is_elementwise(activation):
    return any(activation is fn for fn in _ELEMENTWISE_ACTIVATIONS)


def _evaluate(function, values, dtype):
    """`function` applied to a row of constants, as float64 numbers."""
    row = ops.convert_to_tensor(
        np.asarray([values], dtype="float32"), dtype=dtype
    )
    return np.asarray(ops.convert_to_numpy(function(row)), dtype="float64")[0]


def _has_usable_kernel(layer):
    """Not LoRA-enabled or quantized: its `kernel` is the weight itself."""
    return not getattr(layer, "lora_enabled", False) and not getattr(
        layer, "quantization_mode", None
    )


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _is_last_axis(axis, shape):
    return axis == -1 or axis == len(shape) - 1


def _dead_output_units(layer):
    """`(unit, bias)` of each output unit whose kernel slice is all zero.

    Such a unit outputs `activation(bias)` whatever its input, padding
    included (a zero kernel sees nothing of it).
    """
    kernel = _numpy(layer.kernel)
    dead = np.all(kernel.reshape(-1, kernel.shape[-1]) == 0, axis=0)
    bias = _numpy(layer.bias) if layer.use_bias else np.zeros(dead.size)
    return [(int(unit), float(bias[unit])) for unit in np.flatnonzero(dead)]


class _Analysis:
    """Follows the dead units' constants through the graph, call by call.

    `tracked` maps a tensor key to `{channel: (constant, group)}`: the
    channels of that tensor (its last axis) that hold a dead unit's
    constant, and the group of units whose removal removes them.
    """

    def __init__(self, model):
        self.calls, self.outputs, self.layers = _calls(model)
        self.groups = _Groups()
        self.tracked = {}
        self.origins = {}  # group -> (layer name, unit) of a dead unit
        self.units = {}  # source layer name -> its number of units

    def run(self):
        for call in self.calls:
            incoming = [self.tracked.get(key, {}) for key in call.inputs]
            outgoing = self._visit(call, incoming)
            if outgoing:
                self.tracked[call.output] = outgoing
        for key in self.outputs:
            for constant, group in self.tracked.get(key, {}).values():
                self._keep(group, constant, "the model's output")
        self._keep_one_unit_per_layer()
        return self._plan()

    # Blocking and recording.

    def _keep(self, group, constant, where):
        self.groups.keep(group, ("reach", where, constant))

    def _keep_all(self, incoming, where):
        for tracked in incoming:
            for constant, group in tracked.values():
                self._keep(group, constant, where)

    def _opaque(self, call, incoming, why=None):
        layer = call.layer
        if why is None:
            why = f"{_a_kind(layer)} that compact does not see through"
        self._keep_all(incoming, f"`{layer.name}`, {why}")
        return {}

    # One call.

    def _visit(self, call, incoming):
        layer = call.layer
        kind = type(layer)
        if kind is keras.layers.InputLayer:
            return {}
        if not call.plain:
            why = "a layer used more than once, or called with arguments"
            return self._opaque(call, incoming, why)
        if call.merged:
            return self._visit_merge(call, incoming)
        if len(call.inputs) != 1:
            return self._opaque(call, incoming)
        tracked = incoming[0]
        if kind in _DENSE or kind in _CONVS:
            return self._visit_kernel_layer(call, tracked)
        if kind in _DEPTHWISE:
            return self._visit_depthwise(call, tracked)
        if kind in _BATCH_NORM:
            return self._visit_batch_norm(call, tracked)
        if kind in _ACTIVATION_LAYERS:
            return self._visit_activation(call, tracked)
        if kind in _INFERENCE_IDENTITY:
            return dict(tracked)
        if kind in _REGKIT_NOISE:
            return self._visit_regkit_noise(call, tracked)
        if kind in _POOLING and _channels_last(layer):
            return dict(tracked)
        if kind is keras.layers.Flatten and _channels_last(layer):
            return self._visit_flatten(call, tracked)
        return self._opaque(call, incoming)

    def _visit_kernel_layer(self, call, tracked):
        """A Dense or Conv: cuts input rows, then starts its dead units."""
        layer = call.layer
        is_conv = type(layer) in _CONVS
        usable = _has_usable_kernel(layer) and (
            not is_conv or (_channels_last(layer) and layer.groups == 1)
        )
        if not usable:
            return self._opaque(call, [tracked])
        kind = _kind_name(layer)
        for row, (constant, group) in tracked.items():
            if abs(constant) <= _ZERO:
                self.groups.add_effect(group, ("inputs", layer.name, row, 0.0))
            elif not layer.use_bias:
                where = f"`{layer.name}`, {_a_kind(layer)} without bias"
                self._keep(group, constant, where)
            elif is_conv and layer.padding != "valid":
                where = f"a '{layer.padding}'-padded {kind} `{layer.name}`"
                self._keep(group, constant, where)
            else:
                effect = ("inputs", layer.name, row, constant)
                self.groups.add_effect(group, effect)
        return self._start_dead_units(layer)

    def _start_dead_units(self, layer):
        """The tracked channels of a Dense or Conv's own dead units."""
        if not _is_elementwise(layer.activation):
            return {}
        self.units[layer.name] = int(layer.kernel.shape[-1])
        dead = _dead_output_units(layer)
        if not dead:
            return {}
        constants = _evaluate(
            layer.activation, [bias for _, bias in dead], layer.compute_dtype
        )
        outgoing = {}
        for (unit, _), constant in zip(dead, constants, strict=True):
            constant = float(constant)
            group = self.groups.new()
            self.groups.add_effect(group, ("outputs", layer.name, unit))
            self.origins[group] = (layer.name, unit)
            outgoing[unit] = (constant, group)
        return outgoing

    def _visit_depthwise(self, call, tracked):
        """Cuts input channels; their `depth_multiplier` outputs follow."""
        layer = call.layer
        usable = (
            _has_usable_kernel(layer)
            and _channels_last(layer)
            and _is_elementwise(layer.activation)
        )
        if not usable:
            return self._opaque(call, [tracked])
        kernel = _numpy(layer.kernel)  # (*spatial, channels, multiplier)
        multiplier = kernel.shape[-1]
        bias = (
            _numpy(layer.bias)
            if layer.use_bias
            else np.zeros(kernel.shape[-2] * multiplier)
        )
        spatial = tuple(range(kernel.ndim - 2))
        outgoing = {}
        for channel, (constant, group) in tracked.items():
            if abs(constant) > _ZERO and layer.padding != "valid":
                kind = _kind_name(layer)
                where = f"a '{layer.padding}'-padded {kind} `{layer.name}`"
                self._keep(group, constant, where)
                continue
            first = channel * multiplier
            before = constant * kernel[..., channel, :].sum(axis=spatial)
            before = before + bias[first : first + multiplier]
            after = _evaluate(layer.activation, before, layer.compute_dtype)
            self.groups.add_effect(group, ("channels", layer.name, channel))
            for k in range(multiplier):
                outgoing[first + k] = (float(after[k]), group)
        return outgoing

    def _visit_batch_norm(self, call, tracked):
        layer = call.layer
        if not _is_last_axis(layer.axis, call.shapes[0]):
            return self._opaque(call, [tracked])
        mean = _numpy(layer.moving_mean)
        variance = _numpy(layer.moving_variance)
        gamma = _numpy(layer.gamma) if layer.scale else np.ones_like(mean)
        beta = _numpy(layer.beta) if layer.center else np.zeros_like(mean)
        outgoing = {}
        for channel, (constant, group) in tracked.items():
            scale = gamma[channel] / math.sqrt(
                variance[channel] + layer.epsilon
            )
            value = (constant - mean[channel]) * scale + beta[channel]
            self.groups.add_effect(group, ("channels", layer.name, channel))
            outgoing[channel] = (float(value), group)
        return outgoing

    def _visit_activation(self, call, tracked):
        layer = call.layer
        if type(layer) is keras.layers.Activation and not _is_elementwise(
            layer.activation
        ):
            return self._opaque(call, [tracked])
        if not tracked:
            return {}
        channels = list(tracked)
        constants = [tracked[channel][0] for channel in channels]
        values = _evaluate(layer, constants, layer.compute_dtype)
        return {
            channel: (float(value), tracked[channel][1])
            for channel, value in zip(channels, values, strict=True)
        }

    def _visit_regkit_noise(self, call, tracked):
        """The identity at inference, unless it stays on (`mc=True`)."""
        layer = call.layer
        if not layer.mc:
            return dict(tracked)
        outgoing = {}
        where = (
            f"`{layer.name}`, {_a_kind(layer)} that stays on at "
            "inference (mc=True)"
        )
        for channel, (constant, group) in tracked.items():
            if abs(constant) <= _ZERO:
                outgoing[channel] = (constant, group)
            else:
                self._keep(group, constant, where)
        return outgoing

    def _visit_flatten(self, call, tracked):
        """Channel j of a (*spatial, C) map: features p * C + j, every p."""
        shape = call.shapes[0]
        if len(shape) == 2:
            return dict(tracked)
        if any(size is None for size in shape[1:]):
            return self._opaque(call, [tracked], "a Flatten of unknown size")
        channels = shape[-1]
        positions = math.prod(shape[1:-1])
        return {
            position * channels + channel: entry
            for channel, entry in tracked.items()
            for position in range(positions)
        }

    def _visit_merge(self, call, incoming):
        layer = call.layer
        kind = type(layer)
        if kind is keras.layers.Concatenate:
            return self._visit_concatenate(call, incoming)
        shapes = call.shapes
        same_channels = len({(len(s), s[-1]) for s in shapes}) == 1
        if kind not in _MERGES or not same_channels or shapes[0][-1] is None:
            return self._opaque(call, incoming)
        outgoing = {}
        channels = set().union(*incoming)
        where = (
            f"`{layer.name}`, {_a_kind(layer)} whose other inputs are "
            "not constant there"
        )
        for channel in sorted(channels):
            entries = [tracked.get(channel) for tracked in incoming]
            if any(entry is None for entry in entries):
                for entry in entries:
                    if entry is not None:
                        self._keep(entry[1], entry[0], where)
                continue
            group = self.groups.join([group for _, group in entries])
            constants = np.array([constant for constant, _ in entries])
            outgoing[channel] = (float(_MERGES[kind](constants)), group)
        return outgoing

    def _visit_concatenate(self, call, incoming):
        shapes = call.shapes
        known = all(shape[-1] is not None for shape in shapes)
        axes = all(_is_last_axis(call.layer.axis, shape) for shape in shapes)
        if not (known and axes):
            return self._opaque(call, incoming)
        outgoing = {}
        offset = 0
        for shape, tracked in zip(shapes, incoming, strict=True):
            for channel, entry in tracked.items():
                outgoing[offset + channel] = entry
            offset += shape[-1]
        return outgoing

    # The outcome.

    def _keep_one_unit_per_layer(self):
        """A layer with every unit dead keeps one: Keras needs units >= 1."""
        for name, units in self.units.items():
            removable = sorted(
                unit
                for group, (layer, unit) in self.origins.items()
                if layer == name and not self.groups.reasons(group)
            )
            if units and len(removable) == units:
                group = next(
                    g
                    for g, origin in self.origins.items()
                    if origin == (name, removable[0])
                )
                self.groups.keep(
                    group,
                    (
                        "plain",
                        "every unit is zero, and a layer keeps one",
                        None,
                    ),
                )

    def _plan(self):
        cuts: dict[str, _Cut] = {}
        for root in self.groups.roots():
            if self.groups.reasons(root):
                continue
            for effect in self.groups.effects(root):
                role, name = effect[:2]
                cut = cuts.setdefault(name, _Cut())
                if role == "outputs":
                    cut.outputs.add(effect[2])
                elif role == "inputs":
                    cut.inputs[effect[2]] = effect[3]
                else:
                    cut.channels.add(effect[2])
        kept: dict[str, Any] = {}
        for group, (name, _) in sorted(self.origins.items()):
            reasons = self.groups.reasons(group)
            if not reasons:
                continue
            style, where, constant = reasons[0]
            constants = kept.setdefault(name, {}).setdefault((style, where), [])
            constants.append(constant)
        return _Plan(cuts=cuts, kept=kept)


def _plan(model):
    return _Analysis(model).run()


# --- The new model ---------------------------------------------------------


def _smaller_config(layer, cut):
    """`layer`'s config with its removed output units taken off."""
    config = layer.get_config()
    if cut is not None and cut.outputs:
        key = "units" if type(layer) in _DENSE else "filters"
        config[key] -= len(cut.outputs)
    return config


def _rebuild(model, plan):
    """The new, uncompiled model, its layers made from their configs."""

    def clone_layer(layer):
        config = _smaller_config(layer, plan.cuts.get(layer.name))
        return layer.__class__.from_config(config)

    if type(model) is keras.Sequential:
        # Keras's clone_model also compiles the clone like the original;
        # this is its Sequential branch without that step.
        inputs = _sequential_input(model)
        return keras.Sequential(
            [inputs] + [clone_layer(layer) for layer in model.layers],
            name=model.name,
            trainable=model.trainable,
        )
    # An uncompiled Functional view of the model, so that clone_model does
    # not carry over the original's compile state; and inputs made here, as
    # clone_model would name them after their tensors, not their layers.
    view = _functional_view(model)
    return keras.models.clone_model(
        view, input_tensors=_functional_inputs(view), clone_function=clone_layer
    )


def _functional_inputs(model):
    """New inputs like the model's, in its structure, with its layer names."""
    input_layers = {
        id(layer.output): layer
        for layer in model.layers
        if type(layer) is keras.layers.InputLayer
    }

    def new_input(tensor):
        config = input_layers[id(tensor)].get_config()
        return keras.layers.InputLayer.from_config(config).output

    return keras.tree.map_structure(new_input, model.input)


def _sequential_input(model):
    """A new input layer like the Sequential model's own."""
    first = model.get_config()["layers"][0]
    if first["class_name"] == "InputLayer":
        return keras.layers.InputLayer.from_config(first["config"])
    (inputs,) = model.inputs
    return keras.Input(batch_shape=tuple(inputs.shape), dtype=inputs.dtype)


def _cut_kernel_layer(layer, cut):
    """A Dense or Conv's kernel and bias: constants folded, units cut."""
    kernel = _numpy(layer.kernel)  # (*spatial, inputs, outputs)
    spatial = tuple(range(kernel.ndim - 2))
    values = {}
    if layer.use_bias:
        bias = _numpy(layer.bias)
        for row, constant in cut.inputs.items():
            if constant:
                bias = bias + constant * kernel[..., row, :].sum(axis=spatial)
        values[id(layer.bias)] = np.delete(bias, sorted(cut.outputs))
    kernel = np.delete(kernel, sorted(cut.inputs), axis=-2)
    kernel = np.delete(kernel, sorted(cut.outputs), axis=-1)
    values[id(layer.kernel)] = kernel
    return values


def _cut_depthwise(layer, cut):
    """A depthwise kernel's input channels, and their bias entries."""
    kernel = _numpy(layer.kernel)  # (*spatial, channels, multiplier)
    multiplier = kernel.shape[-1]
    channels = sorted(cut.channels)
    values = {id(layer.kernel): np.delete(kernel, channels, axis=-2)}
    if layer.use_bias:
        entries = [
            c * multiplier + k for c in channels for k in range(multiplier)
        ]
        values[id(layer.bias)] = np.delete(_numpy(layer.bias), entries)
    return values


def _cut_batch_norm(layer, cut):
    channels = sorted(cut.channels)
    weights = (
        layer.gamma,
        layer.beta,
        layer.moving_mean,
        layer.moving_variance,
    )
    return {
        id(weight): np.delete(_numpy(weight), channels)
        for weight in weights
        if weight is not None
    }


def _cut_values(layer, cut):
    """`{id(variable): new value}` for the weights of `layer` that change."""
    kind = type(layer)
    if kind in _DENSE or kind in _CONVS:
        return _cut_kernel_layer(layer, cut)
    if kind in _DEPTHWISE:
        return _cut_depthwise(layer, cut)
    return _cut_batch_norm(layer, cut)


def _copy_weights(model, new_model, plan):
    """Sets the new model's weights: the original's, cut where planned."""
    for layer in model.layers:
        if not layer.weights:
            continue
        new_layer = new_model.get_layer(layer.name)
        cut = plan.cuts.get(layer.name)
        if cut is None:
            new_layer.set_weights(layer.get_weights())
            continue
        # Cut values are float64; assigning casts them to each weight's dtype.
        replaced = _cut_values(layer, cut)
        new_layer.set_weights(
            [
                replaced.get(id(weight), ops.convert_to_numpy(weight))
                for weight in layer.weights
            ]
        )


# --- The log ---------------------------------------------------------------


def _change_line(layer, cut):
    """`name: 64 -> 41 units (23 removed); 32 -> 30 inputs`."""
    parts = []
    kind = type(layer)
    if cut.outputs:
        before = layer.get_config()["units" if kind in _DENSE else "filters"]
        noun = "units" if kind in _DENSE else "filters"
        after = before - len(cut.outputs)
        parts.append(f"{before} -> {after} {noun} ({len(cut.outputs)} removed)")
    if cut.inputs:
        before = int(layer.kernel.shape[-2])
        after = before - len(cut.inputs)
        folded = sum(1 for constant in cut.inputs.values() if constant)
        text = f"{before} -> {after} inputs"
        if folded:
            text += f" ({folded} constant inputs folded into the bias)"
        parts.append(text)
    if cut.channels:
        before = (
            int(layer.kernel.shape[-2])
            if kind in _DEPTHWISE
            else int(layer.moving_mean.shape[0])
        )
        after = before - len(cut.channels)
        parts.append(f"{before} -> {after} channels")
    return f"{layer.name}: " + "; ".join(parts)


def _describe_constants(constants):
    low, high = min(constants), max(constants)
    if low == high:
        return f"{low:.4g}"
    return f"{low:.4g} to {high:.4g}"


def _kept_line(name, style, where, constants):
    count = len(constants)
    units = "unit" if count == 1 else "units"
    if style == "plain":
        why = where
    else:
        values = _describe_constants(constants)
        why = f"their constant output {values} reaches {where}"
    return f"{name}: kept {count} zero {units}: {why}"


def _print_log(model, new_model, plan):
    for layer in model.layers:
        cut = plan.cuts.get(layer.name)
        if cut is not None:
            _console.write_line(_change_line(layer, cut))
        for (style, where), constants in plan.kept.get(layer.name, {}).items():
            _console.write_line(_kept_line(layer.name, style, where, constants))
    before, after = model.count_params(), new_model.count_params()
    _console.write_line(
        f"Parameters: {before:,} -> {after:,} ({before - after:,} removed)"
    )
