"""Which layers' settings Keras's saving records, and keeping those it can.

`model.save()` writes the model's config, and loading rebuilds every layer
from it. A layer's own settings (its `kernel_regularizer`, its class) come
back only if the config records that layer's own config: true of the layers
of Sequential and Functional models, of wrapped layers and of RNN cells. A
layer that builds its sublayers itself, from its own arguments, records only
those arguments: `MultiHeadAttention` passes its `kernel_regularizer` to its
`EinsumDense` projections, so their penalties are saved when they all share
one, which `sync_attention_penalties` makes so; KerasHub's transformer
layers and subclassed models pass none, so nothing set on their sublayers
is saved.
"""

import inspect

import keras

from keras_regkit import selectors

# Attention layers that build their projections from these arguments.
_ATTENTION_PENALTIES = {
    keras.layers.MultiHeadAttention: (
        "_kernel_regularizer",
        "_bias_regularizer",
    ),
    keras.layers.GroupQueryAttention: (
        "kernel_regularizer",
        "bias_regularizer",
    ),
}


# Keras layers whose config holds their sublayers' own configs (an RNN's
# holds its cell's settings).
_CONTAINERS = (
    keras.layers.Wrapper,
    keras.layers.Bidirectional,
    keras.layers.RNN,
    keras.layers.StackedRNNCells,
)


def _attention_attributes(layer):
    for cls, attributes in _ATTENTION_PENALTIES.items():
        if isinstance(layer, cls):
            return attributes
    return None


def _functional_like_constructor(cls):
    """Keras's own test: does `cls` take a Functional model's arguments?"""
    spec = inspect.getfullargspec(cls.__init__)
    if spec.varargs is not None and spec.varkw is not None:
        return True
    return spec.args[1:3] == ["inputs", "outputs"]


def _records_sublayer_configs(layer):
    """Whether `layer`'s config holds the configs of its sublayers."""
    get_config = type(layer).get_config.__qualname__
    if isinstance(layer, keras.Sequential):
        return get_config == "Sequential.get_config"
    if isinstance(layer, keras.Model):
        return get_config == "Functional.get_config" and (
            _functional_like_constructor(type(layer))
        )
    keras_made = type(layer).get_config.__module__.startswith("keras.")
    return keras_made and isinstance(layer, _CONTAINERS)


def recorded_layers(model):
    """The ids of the layers whose own config the model's saved config holds.

    The model itself counts (it is what is saved), and so does every layer
    reached from it through layers that record their sublayers' configs.
    """
    recorded = {id(model)}

    def visit(layer):
        if not _records_sublayer_configs(layer):
            return
        for child in selectors.sublayers(layer):
            if id(child) not in recorded:
                recorded.add(id(child))
                visit(child)

    visit(model)
    return recorded


def _same_penalty(a, b):
    if a is None or b is None:
        return a is b
    return type(a) is type(b) and a.get_config() == b.get_config()


def _projections(attention):
    found = {
        id(layer): layer
        for layer in selectors.sublayers(attention)
        if isinstance(layer, keras.layers.EinsumDense)
    }
    return list(found.values())


def sync_attention_penalties(model):
    """Makes attention layers record the penalties of their projections.

    For every `MultiHeadAttention` (or `GroupQueryAttention`) inside
    `model` whose projections all share one kernel penalty, the layer's own
    `kernel_regularizer` argument becomes that penalty, so that its config
    saves it and loading passes it to the rebuilt projections; likewise for
    biases.

    Returns:
        The ids of the projections whose penalties the attention layer's
        config cannot express (they differ within one layer).
    """
    unsaved: set[int] = set()
    for _, layer in selectors.walk(model):
        attributes = _attention_attributes(layer)
        projections = _projections(layer) if attributes else []
        if not projections:
            continue
        kernel_attribute, bias_attribute = attributes
        kernels = [p.kernel_regularizer for p in projections]
        with_bias = [p for p in projections if p.bias is not None]
        biases = [p.bias_regularizer for p in with_bias]
        if all(_same_penalty(kernels[0], k) for k in kernels):
            setattr(layer, kernel_attribute, kernels[0])
        else:
            unsaved.update(map(id, projections))
        if biases and all(_same_penalty(biases[0], b) for b in biases):
            setattr(layer, bias_attribute, biases[0])
        elif biases:
            unsaved.update(map(id, with_bias))
    return unsaved


def _records_attribute(layer, attribute):
    """Whether `layer.get_config()` holds `attribute`."""
    try:
        return attribute in layer.get_config()
    except NotImplementedError:
        return False


def unsaved_layers(model, settings):
    """The layers whose new settings `model.save()` would not keep.

    Call it after making the changes: it first has the attention layers
    record their projections' penalties (`sync_attention_penalties`).

    Args:
        model: the model that will be saved.
        settings: `(layer, attribute)` pairs, the layer attributes changed
            (`"kernel_regularizer"`, ...).

    Returns:
        The layers among `settings` whose attribute the saved config will
        not hold, each once, in order.
    """
    recorded = recorded_layers(model)
    saved_projections: set[int] = set()
    for _, layer in selectors.walk(model):
        if id(layer) in recorded and _attention_attributes(layer):
            saved_projections.update(map(id, _projections(layer)))
    saved_projections -= sync_attention_penalties(model)
    unsaved, seen = [], set()
    for layer, attribute in settings:
        saved = id(layer) in saved_projections or (
            id(layer) in recorded and _records_attribute(layer, attribute)
        )
        if not saved and id(layer) not in seen:
            seen.add(id(layer))
            unsaved.append(layer)
    return unsaved
