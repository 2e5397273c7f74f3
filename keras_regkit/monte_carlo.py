"""Monte-Carlo dropout prediction: the mean and spread of stochastic passes."""

import contextlib
import math
import warnings
import weakref

import keras
import numpy as np

from keras_regkit import _sampling, _validation, selectors
from keras_regkit.layers._stochastic import StochasticLayer

# How much a forward pass may hold when `batch_size` is not given: the
# number of activation values summed over every layer's output, for all the
# rows of the pass together (2**24 float32 values are 64 MiB). JAX's
# compiled passes slow down on CPU beyond about 1000 rows of the benchmark
# MLP (4900 values a row), where TensorFlow and PyTorch keep speeding up to
# 4000 (benchmarks/RESULTS.md).
PASS_ELEMENTS = {"jax": 2**22}
DEFAULT_PASS_ELEMENTS = 2**24

# Per-row activation size assumed for a model whose layers do not expose
# their outputs (subclassed models): this many times its input row.
_UNKNOWN_MODEL_FACTOR = 16


def mc_predict(model, x, samples=30, batch_size=None, seed=None):
    """Mean and standard deviation of `samples` stochastic forward passes.

    Monte-Carlo dropout (Gal and Ghahramani, "Dropout as a Bayesian
    approximation", ICML 2016): with dropout left on at inference, the
    spread of the predictions over many passes estimates the model's
    uncertainty. Every dropout layer of the model drops units during these
    passes: `keras_regkit.layers.Dropout` and `DropPath` (with `mc=True` or
    not), and Keras's own `Dropout`, `SpatialDropout1D/2D/3D`,
    `GaussianDropout` and `AlphaDropout`, however deeply nested (the
    attention dropout of `MultiHeadAttention`, the dropouts inside
    `keras.applications` and KerasHub models). `GaussianNoise` is not
    dropout and stays off: it adds noise to the inputs, a data augmentation,
    rather than sampling the weights. Everything else runs in inference
    mode (`training=False`: batch normalization uses its moving statistics).

    Rather than calling the model `samples` times, each forward pass stacks
    several copies of a chunk of rows, so the model sees one large batch.
    This assumes, as `predict` does, that the model treats the rows of a
    batch independently at inference. In a Sequential or Functional model
    whose first stochastic layer is one of its own layers, everything before
    that layer runs once per row, not once per sample: MobileNetV3's trunk
    runs once, only its head is sampled.

    The model is left exactly as it was: its weights, its layers (their
    rates, configs and seed generator states), its compiled functions. The
    masks come from a generator of their own, seeded by `seed`.

    Args:
        model: a Keras model containing at least one of the dropout layers
            above with a rate above 0.
        x: the inputs, as `predict` takes them: an array, or a list or dict
            of arrays for a model with several inputs.
        samples: int >= 1, the number of stochastic passes.
        batch_size: None or int >= 1, the most rows the model sees in one
            forward pass, stacked copies included. It bounds memory as
            `predict`'s `batch_size` does. By default it is derived from the
            size of the model's activations (about 64 MiB of them per
            pass; 16 MiB on JAX, which is faster with smaller passes).
        seed: None or a non-negative integer. The same seed gives the same
            results; None draws one (fixed by `keras.utils.set_random_seed`).

    Returns:
        `(mean, std)`: numpy arrays shaped like `model.predict(x)`'s output
        (or nested structures of them for models with several outputs),
        float32 or wider. `std` is the population standard deviation
        (`ddof=0`) over the samples.

    Example:

    >>> import keras, numpy as np
    >>> import keras_regkit
    >>> model = keras.Sequential([
    ...     keras.Input((3,)),
    ...     keras.layers.Dense(16, activation="relu"),
    ...     keras.layers.Dropout(0.5),
    ...     keras.layers.Dense(1),
    ... ])
    >>> x = np.ones((5, 3), "float32")
    >>> mean, std = keras_regkit.mc_predict(model, x, samples=50, seed=0)
    >>> mean.shape, std.shape
    ((5, 1), (5, 1))
    >>> bool(np.all(std > 0))  # the passes differ
    True
    """
    selectors.check_model(model)
    samples = _validation.positive_int("samples", samples)
    if batch_size is not None:
        batch_size = _validation.positive_int("batch_size", batch_size)
    seed = _validation.seed("seed", seed)
    layers = _stochastic_layers(model)
    inputs = _as_numpy_inputs(x)
    leaves = keras.tree.flatten(inputs)
    rows = _row_count(leaves)
    cut = _Cut.of(model, layers)
    chunk, copies = _pass_sizes(model, cut, leaves, samples, batch_size)

    passes = _Passes.of(model, layers, cut)
    generator = keras.random.SeedGenerator(seed)
    statistics = None
    for start in range(0, rows, chunk):
        stop = min(start + chunk, rows)
        part = keras.tree.map_structure(
            lambda a, start=start, stop=stop: a[start:stop], inputs
        )
        trunk_outputs = passes.trunk(part)
        moments = _Moments()
        for done in range(0, samples, copies):
            count = min(copies, samples - done)
            outputs = passes.head(trunk_outputs, count, generator)
            moments.add(
                keras.tree.map_structure(
                    lambda y, count=count: _split(
                        keras.ops.convert_to_numpy(y), count
                    ),
                    outputs,
                ),
                count,
            )
        if statistics is None:
            statistics = _Results(moments, rows)
        statistics.store(moments, start, stop)
    return statistics.mean, statistics.std


def _stochastic_layers(model):
    walked = selectors.walk(model)
    layers = [layer for _, layer in walked if _sampling.sampler(layer)]
    unknown = _sampling.unknown_subclasses(layer for _, layer in walked)
    if unknown:
        names = ", ".join(layer.name for layer in unknown)
        warnings.warn(
            f"mc_predict leaves these layers off: {names}. They subclass a "
            "Keras dropout layer but replace its `call`, so mc_predict "
            "cannot tell how they sample.",
            UserWarning,
            stacklevel=3,
        )
    recurrent = [
        path for path, layer in walked if _has_cell_dropout(layer)
    ]
    if recurrent:
        warnings.warn(
            "mc_predict leaves off the dropout inside these recurrent "
            f"layers: {', '.join(recurrent)}. Their cells mask their inputs "
            "themselves, during training only; for Monte-Carlo dropout put "
            "Dropout layers around them.",
            UserWarning,
            stacklevel=3,
        )
    if layers:
        return layers
    raise ValueError(
        "mc_predict needs a model with at least one dropout layer whose rate "
        "is above 0 (keras_regkit's Dropout or DropPath; Keras's Dropout, "
        "SpatialDropout1D/2D/3D, GaussianDropout or AlphaDropout, "
        "MultiHeadAttention's dropout included): without one every pass "
        f"gives the same prediction. Model {model.name!r} has none. "
        "GaussianNoise does not count: it is a data augmentation."
    )


def _has_cell_dropout(layer):
    """Whether `layer` is an RNN whose cell drops inputs or states."""
    if not isinstance(layer, keras.layers.RNN):
        return False
    cell = layer.cell
    return bool(
        getattr(cell, "dropout", 0) or getattr(cell, "recurrent_dropout", 0)
    )


class _Cut:
    """A model split before its first stochastic layer: trunk, then head.

    In a Sequential or Functional model (one that runs its graph, not a
    `call` of its own) whose first stochastic layer is one of its own
    layers, the head is the graph from that layer's input to the model's
    outputs and the trunk everything before. Both are Functional models
    over the model's own layers: nothing is copied. There is no cut when
    the head would need another tensor of the trunk (a residual connection
    around the layer), a padding mask, or when a nested model holds the
    first stochastic layer.

    One cut is kept per model, while the model lives.
    """

    _by_model = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, model, layers):
        if model in cls._by_model:
            cut = cls._by_model[model]
        else:
            cut = cls._by_model[model] = cls._make(model, layers)
        if cut is not None and cut.layer_ids != set(map(id, layers)):
            return None
        return cut

    @classmethod
    def _make(cls, model, layers):
        if type(model).call.__qualname__ not in (
            "Functional.call",
            "Sequential.call",
        ):
            return None
        first = _first_stochastic_layer(model, layers)
        if first is None:
            return None
        try:
            boundary = first.input  # raises for a layer called twice
            inputs = _graph_inputs(model)
            if _has_padding_mask(boundary):
                return None
            trunk = keras.Model(inputs, boundary)
            head = keras.Model(boundary, model.outputs)
        except (AttributeError, ValueError):
            return None
        head_layers = {id(layer) for _, layer in selectors.walk(head)}
        if not set(map(id, layers)) <= head_layers:
            return None
        return cls(trunk, head, layers)

    def __init__(self, trunk, head, layers):
        self.trunk = trunk
        self.head = head
        self.layer_ids = set(map(id, layers))


def _first_stochastic_layer(model, layers):
    """The model's first own layer if it is stochastic, else None."""
    stochastic = set(map(id, layers))
    for layer in model.layers:
        if id(layer) in stochastic:
            return layer
        if any(id(inner) in stochastic for _, inner in selectors.walk(layer)):
            return None
    return None


def _graph_inputs(model):
    """The model's symbolic inputs, in the structure `x` comes in."""
    if isinstance(model, keras.Sequential):  # no `input` of its own
        (inputs,) = model.inputs
        return inputs
    return model.input


def _has_padding_mask(tensor):
    # Keras 3 keeps a symbolic tensor's padding mask in this attribute.
    return getattr(tensor, "_keras_mask", None) is not None


def _as_numpy_inputs(x):
    if isinstance(x, (str, bytes)) or not (
        isinstance(x, (list, tuple, dict)) or hasattr(x, "shape")
    ):
        raise TypeError(
            "Invalid value received for argument `x`. Expected an array, or "
            "a list or dict of arrays (datasets and generators are not "
            f"supported). Received: x of type {type(x).__name__}"
        )
    return keras.tree.map_structure(keras.ops.convert_to_numpy, x)


def _row_count(leaves):
    counts = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
    if len(counts) != 1 or None in counts or 0 in counts:
        shapes = [leaf.shape for leaf in leaves]
        raise ValueError(
            "Invalid value received for argument `x`. Expected arrays with "
            f"the same, non-zero number of rows. Received shapes: {shapes}"
        )
    return counts.pop()


def _row_size(shape):
    return math.prod(size for size in shape[1:] if size is not None)


def _activation_size(model):
    """Values a row of `model`'s layers produces; 0 when they do not say."""
    size = 0
    for _, layer in selectors.walk(model):
        try:
            outputs = layer.output
        except (AttributeError, ValueError):
            continue
        size += sum(
            _row_size(tensor.shape) for tensor in keras.tree.flatten(outputs)
        )
    return size


def _pass_sizes(model, cut, leaves, samples, batch_size):
    """`(chunk, copies)`: rows per trunk pass, copies per head pass.

    A head pass holds `copies` copies of `chunk` rows: at most `batch_size`
    rows, or by default as many as keep its activations within the budget;
    a trunk pass holds `chunk` rows, within the same bounds.
    """
    input_size = sum(_row_size(leaf.shape) for leaf in leaves)
    if cut is None:
        trunk_size = 0
        head_size = _activation_size(model) or (
            _UNKNOWN_MODEL_FACTOR * input_size
        )
        head_size += input_size
    else:
        trunk_size = input_size + _activation_size(cut.trunk)
        head_size = _activation_size(cut.head)
    if batch_size is None:
        budget = PASS_ELEMENTS.get(
            keras.backend.backend(), DEFAULT_PASS_ELEMENTS
        )
        head_rows = max(1, budget // max(1, head_size))
        trunk_rows = max(1, budget // max(1, trunk_size))
    else:
        head_rows = trunk_rows = batch_size
    copies = min(samples, head_rows)
    chunk = max(1, min(trunk_rows, head_rows // copies))
    return chunk, copies


def _no_gradient_tape():
    """PyTorch records every eager op for autograd unless told not to."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def _tile(structure, count):
    """`count` copies of the rows of every tensor, one after the other."""
    return keras.tree.map_structure(
        lambda a: keras.ops.tile(a, (count,) + (1,) * (len(a.shape) - 1)),
        structure,
    )


class _Passes:
    """A model's passes: `trunk(rows)` once, then `head(...)` per samples.

    `head(trunk_outputs, count, generator)` runs `count` stochastic passes
    at once over stacked copies of the trunk's outputs, drawing the masks
    from `generator`, and returns outputs shaped (count * rows, ...).
    Eager calls on TensorFlow and PyTorch; on JAX, whose eager calls
    dispatch one small kernel at a time, see `_JaxPasses`.
    """

    @staticmethod
    def of(model, layers, cut):
        if keras.backend.backend() == "jax" and model.built:
            return _JaxPasses.of(model, layers, cut)
        return _Passes(model, layers, cut)

    def __init__(self, model, layers, cut):
        self.model = model
        self.layers = layers
        self.cut = cut

    def trunk(self, rows):
        if self.cut is None:
            return rows
        with _no_gradient_tape():
            return self.cut.trunk(rows, training=False)

    def head(self, trunk_outputs, count, generator):
        network = self.model if self.cut is None else self.cut.head
        draw = _sampling.Draw(generator, count)
        with _no_gradient_tape(), _sampling.switched_on(self.layers, draw):
            return network(_tile(trunk_outputs, count), training=False)


class _JaxPasses:
    """The passes of `_Passes` as jitted, stateless JAX functions.

    They take the values of the model's variables (and of the generator's
    state) as arguments. One instance is kept per model (while the model
    lives and its variables, layers and rates stay the same), so that JAX's
    compilation cache serves later `mc_predict` calls.
    """

    _by_model = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, model, layers, cut):
        variables = [*model.trainable_variables, *model.non_trainable_variables]
        # Keras's layers keep their rates as Python floats: traced as
        # constants, so a change needs a new trace.
        key = (
            tuple(map(id, variables)),
            tuple(map(id, layers)),
            tuple(_traced_rate(layer) for layer in layers),
            id(cut),
        )
        passes = cls._by_model.get(model)
        if passes is None or passes.key != key:
            passes = cls(model, layers, cut, variables, key)
            cls._by_model[model] = passes
        return passes

    def __init__(self, model, layers, cut, variables, key):
        import jax

        self.key = key
        self.variables = variables
        # The traced head routes the seed through this generator's state;
        # each call passes in the value of its caller's generator.
        seed_slot = keras.random.SeedGenerator(0)
        eager = _Passes(weakref.proxy(model), layers, cut)

        def trunk(values, rows):
            mapping = [*zip(variables, values, strict=True)]
            with keras.StatelessScope(state_mapping=mapping):
                return eager.trunk(rows)

        def head(values, seed_value, trunk_outputs, count):
            mapping = [*zip(variables, values, strict=True)]
            mapping.append((seed_slot.state, seed_value))
            with keras.StatelessScope(state_mapping=mapping) as scope:
                outputs = eager.head(trunk_outputs, count, seed_slot)
                return outputs, scope.get_current_value(seed_slot.state)

        self._trunk = jax.jit(trunk) if cut is not None else None
        self._head = jax.jit(head, static_argnums=(3,))

    def _values(self):
        return [variable.value for variable in self.variables]

    def trunk(self, rows):
        if self._trunk is None:
            return rows
        return self._trunk(self._values(), rows)

    def head(self, trunk_outputs, count, generator):
        state = generator.state
        outputs, seed_value = self._head(
            self._values(), state.value, trunk_outputs, count
        )
        state.assign(seed_value)
        return outputs


def _traced_rate(layer):
    """A Keras layer's rate; ours read theirs from a variable, not traced."""
    return None if isinstance(layer, StochasticLayer) else layer.rate


def _split(array, count):
    return array.reshape((count, -1, *array.shape[1:]))


class _Moments:
    """Running mean and sum of squared deviations (Chan et al.'s update)."""

    def __init__(self):
        self.count = 0
        self.mean = None
        self.m2 = None
        self.dtypes = None

    def add(self, outputs, count):
        self.dtypes = keras.tree.map_structure(
            lambda y: np.result_type(y.dtype, np.float32), outputs
        )
        batch_mean = keras.tree.map_structure(
            lambda y: y.mean(axis=0, dtype="float64"), outputs
        )
        batch_m2 = keras.tree.map_structure(
            lambda y, m: np.square(y - m).sum(axis=0), outputs, batch_mean
        )
        if self.mean is None:
            self.count, self.mean, self.m2 = count, batch_mean, batch_m2
            return
        total = self.count + count
        delta = keras.tree.map_structure(
            lambda b, a: b - a, batch_mean, self.mean
        )
        self.mean = keras.tree.map_structure(
            lambda a, d: a + d * (count / total), self.mean, delta
        )
        self.m2 = keras.tree.map_structure(
            lambda a, b, d: a + b + d * d * (self.count * count / total),
            self.m2,
            batch_m2,
            delta,
        )
        self.count = total


class _Results:
    """The mean and std arrays for all rows, filled chunk by chunk."""

    def __init__(self, moments, rows):
        def empty(m, dtype):
            return np.empty((rows, *m.shape[1:]), dtype=dtype)

        self.mean = keras.tree.map_structure(
            empty, moments.mean, moments.dtypes
        )
        self.std = keras.tree.map_structure(empty, moments.mean, moments.dtypes)

    def store(self, moments, start, stop):
        def put(target, value):
            target[start:stop] = value

        std = keras.tree.map_structure(
            lambda m2: np.sqrt(m2 / moments.count), moments.m2
        )
        keras.tree.map_structure(put, self.mean, moments.mean)
        keras.tree.map_structure(put, self.std, std)
