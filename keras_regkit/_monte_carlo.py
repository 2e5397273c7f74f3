"""Monte-Carlo dropout prediction: the mean and spread of stochastic passes."""

import contextlib
import math
import warnings
import weakref
from typing import Any

import keras
import numpy as np

from keras_regkit import _sampling, _validation, selectors
from keras_regkit.layers._stochastic import StochasticLayer

# How much a forward pass may hold when `batch_size` is not given: the
# number of values in its largest activation, for all the rows of the pass
# together (2**22 float32 values are 16 MiB). On the benchmark MLP (784
# inputs, two hidden layers of 1024) TensorFlow and PyTorch keep speeding
# up to about 4000 rows a pass, JAX's compiled passes slow down beyond
# about 1000 on CPU; on the tiny BERT of `bench_mc_real_models.py` (64
# tokens of 64 values a row) passes of 250 to 1000 rows are fastest
# (benchmarks/RESULTS.md).
PASS_ELEMENTS = {"jax": 2**20}
DEFAULT_PASS_ELEMENTS = 2**22

# Largest activation assumed for a model whose layers do not expose their
# outputs (subclassed models): this many times its input row.
_UNKNOWN_MODEL_FACTOR = 16


def mc_predict(
    model: keras.Model,
    x: Any,
    samples: int = 30,
    batch_size: int | None = None,
    seed: int | None = None,
    verbose: int | str = "auto",
) -> tuple[Any, Any]:
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
            model's largest activation, which holds at most 2**22 values a
            pass (16 MiB of float32; 2**20 on JAX, whose compiled passes
            are faster when smaller).
        seed: None or a non-negative integer. The same seed gives the same
            results; None draws one (fixed by `keras.utils.set_random_seed`).
        verbose: `"auto"`, 0, 1 or 2, as for `predict`: 0 silent, 1 a
            progress bar over the forward passes (`keras.utils.Progbar`),
            2 one line when done. `"auto"` is 1 when the work takes more
            than one forward pass, else 0.

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
    selectors._check_model(model)
    samples = _validation.positive_int("samples", samples)
    if batch_size is not None:
        batch_size = _validation.positive_int("batch_size", batch_size)
    seed = _validation.seed("seed", seed)
    verbose = _validation.verbosity("verbose", verbose, ("auto", 0, 1, 2))
    layers = _stochastic_layers(model)
    inputs = _as_numpy_inputs(x)
    leaves = keras.tree.flatten(inputs)
    rows = _row_count(leaves)
    split = _Split.of(model, layers)
    chunk, copies = _pass_sizes(model, split, leaves, samples, batch_size)

    passes = _Passes.of(model, layers, split)
    generator = keras.random.SeedGenerator(seed)
    total = math.ceil(rows / chunk) * math.ceil(samples / copies)
    if verbose == "auto":
        verbose = 1 if total > 1 else 0
    progress = keras.utils.Progbar(total, verbose=verbose, unit_name="pass")
    statistics = None
    for start in range(0, rows, chunk):
        stop = min(start + chunk, rows)
        part = keras.tree.map_structure(
            lambda a, start=start, stop=stop: a[start:stop], inputs
        )
        moments = _Moments()
        for done in range(0, samples, copies):
            count = min(copies, samples - done)
            outputs = passes(part, count, generator)
            moments.add(
                keras.tree.map_structure(
                    lambda y, count=count: _split(
                        keras.ops.convert_to_numpy(y), count
                    ),
                    outputs,
                ),
                count,
            )
            progress.add(1)
        if statistics is None:
            statistics = _Results(moments, rows)
        statistics.store(moments, start, stop)
    assert statistics is not None  # `x` has at least one row
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
    recurrent = [path for path, layer in walked if _has_cell_dropout(layer)]
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


class _Split:
    """Where the copies of the rows can be made: at the first dropout.

    In a Sequential or Functional model (one that runs its graph, not a
    `call` of its own) whose first stochastic layer is one of its own
    layers, that layer can stack the copies itself, from the rows it
    receives, when everything after it sees only what comes out of it: the
    layers before it (the trunk) then run once per row, not once per
    sample. Not so when a later layer also takes a tensor from before it
    (a residual connection around it), when its input carries a padding
    mask (Keras would hand the mask on as it was, not stacked), or when a
    nested model holds the first stochastic layer: the model's inputs are
    stacked instead. The graph is read, never changed.

    Attributes:
        layer: the stochastic layer that makes the copies.
        trunk_layers, head_layers: the model's own layers before and
            after it (the head includes it).

    One split is kept per model, while the model lives.
    """

    _by_model: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, model, layers):
        if model in cls._by_model:
            split = cls._by_model[model]
        else:
            split = cls._by_model[model] = cls._find(model, layers)
        if split is not None and split.layer_ids != set(map(id, layers)):
            return None
        return split

    @classmethod
    def _find(cls, model, layers):
        if type(model).call.__qualname__ not in (
            "Functional.call",
            "Sequential.call",
        ):
            return None
        first = _first_stochastic_layer(model, layers)
        if first is None:
            return None
        try:
            if _has_padding_mask(first.input):
                return None
            head = _layers_fed_only_by(model, first)
        except (AttributeError, ValueError):  # a layer called twice
            return None
        if head is None:
            return None
        inside = {
            id(inner) for layer in head for _, inner in _walk_including(layer)
        }
        if not set(map(id, layers)) <= inside:
            return None
        trunk = [layer for layer in model.layers if layer not in head]
        return cls(first, trunk, head, layers)

    def __init__(self, layer, trunk_layers, head_layers, layers):
        self.layer = layer
        self.trunk_layers = trunk_layers
        self.head_layers = head_layers
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


def _layers_fed_only_by(model, first):
    """`first` and the layers after it, if they see nothing else.

    Returns None when a layer takes tensors from both sides of `first`, or
    when a model output does not come from it. Raises `AttributeError` or
    `ValueError` (from `layer.input`) for a layer called more than once.
    """
    position = model.layers.index(first)
    produced = {id(t) for t in keras.tree.flatten(first.output)}
    head = [first]
    for layer in model.layers[position + 1 :]:
        sources = [id(t) in produced for t in keras.tree.flatten(layer.input)]
        if not any(sources):
            continue  # a branch of the trunk
        if not all(sources):
            return None
        produced.update(id(t) for t in keras.tree.flatten(layer.output))
        head.append(layer)
    if not all(id(t) in produced for t in keras.tree.flatten(model.outputs)):
        return None
    return head


def _walk_including(layer):
    """`layer` and every layer inside it, each once."""
    inner = selectors.walk(layer)
    if isinstance(layer, keras.Model):  # walk leaves a model itself out
        return [(layer.name, layer), *inner]
    return inner


def _has_padding_mask(tensor):
    # Keras 3 keeps a symbolic tensor's padding mask in this attribute.
    return any(
        getattr(t, "_keras_mask", None) is not None
        for t in keras.tree.flatten(tensor)
    )


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


def _row_size(shape, unknown=1):
    """Values in a row of a tensor; `unknown` stands for each None axis."""
    return math.prod(unknown if size is None else size for size in shape[1:])


def _largest_activation(layers, unknown):
    """Values in a row of the largest output of `layers`; 0 if none says.

    `layers` are `(path, layer)` pairs; axes left None by the model (a
    sequence's length) count as `unknown` values.
    """
    largest = 0
    for _, layer in layers:
        try:
            outputs = layer.output
        except (AttributeError, ValueError):  # not in a graph, or shared
            continue
        for tensor in keras.tree.flatten(outputs):
            largest = max(largest, _row_size(tensor.shape, unknown))
    return largest


def _pass_sizes(model, split, leaves, samples, batch_size):
    """`(chunk, copies)`: the rows of a pass, and the copies made of them.

    A pass holds at most `batch_size` rows, stacked copies included, or
    by default as many as keep its largest activation within the budget:
    the trunk's for `chunk` rows, the head's for `chunk * copies`. Axes
    the model leaves None (a sequence's length, an image's size) are taken
    to be as long as the longest axis of the inputs.
    """
    if batch_size is not None:
        copies = min(samples, batch_size)
        return max(1, batch_size // copies), copies
    unknown = max(
        (size for leaf in leaves for size in leaf.shape[1:]), default=1
    )
    input_size = max(_row_size(leaf.shape) for leaf in leaves)

    def largest(layers):
        inner = [pair for layer in layers for pair in _walk_including(layer)]
        return _largest_activation(inner, unknown)

    if split is None:
        trunk_size = 0
        stacked_size = max(
            input_size,
            _largest_activation(selectors.walk(model), unknown)
            or _UNKNOWN_MODEL_FACTOR * input_size,
        )
    else:
        trunk_size = max(input_size, largest(split.trunk_layers))
        stacked_size = largest(split.head_layers)
    budget = PASS_ELEMENTS.get(keras.backend.backend(), DEFAULT_PASS_ELEMENTS)
    copies = min(samples, max(1, budget // max(1, stacked_size)))
    chunk = max(1, budget // max(1, trunk_size, copies * stacked_size))
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
    """A model's stochastic passes, `passes(rows, count, generator)`.

    Runs `count` passes at once over stacked copies of `rows`, drawing the
    masks from `generator`, and returns outputs shaped (count * rows, ...).
    With a split, its layer makes the copies; otherwise the rows are
    stacked before the model sees them. Eager calls on PyTorch; compiled
    ones on TensorFlow and JAX, whose eager calls dispatch one small kernel
    at a time (see `_TensorFlowPasses` and `_JaxPasses`).
    """

    @staticmethod
    def of(model, layers, split):
        compiled = {"jax": _JaxPasses, "tensorflow": _TensorFlowPasses}.get(
            keras.backend.backend()
        )
        if compiled is None or not model.built:  # a first call builds
            return _Passes(model, layers, split)
        return compiled.of(model, layers, split)

    def __init__(self, model, layers, split):
        self.model = model
        self.layers = layers
        self.split = split

    def __call__(self, rows, count, generator):
        stacking_layer = None if self.split is None else self.split.layer
        if stacking_layer is None:
            rows = _tile(rows, count)
        draw = _sampling.Draw(generator, count)
        with (
            _no_gradient_tape(),
            _sampling.switched_on(self.layers, draw, stacking_layer),
        ):
            return self.model(rows, training=False)


class _CompiledPasses:
    """The passes of `_Passes`, compiled once per model and kept.

    One instance is kept per model, while the model lives and its
    variables, layers and rates stay the same, so that later `mc_predict`
    calls reuse the compiled passes. The passes draw their masks from a
    generator of their own (`seed_slot`), whose state each call takes from
    its caller's generator and hands back.
    """

    # A weakref.WeakKeyDictionary in each subclass.
    _by_model: Any = None

    @classmethod
    def of(cls, model, layers, split):
        variables = [*model.trainable_variables, *model.non_trainable_variables]
        # Keras's layers keep their rates as Python floats: traced as
        # constants, so a change needs a new trace.
        key = (
            tuple(map(id, variables)),
            tuple(map(id, layers)),
            tuple(_traced_rate(layer) for layer in layers),
            id(split),
        )
        passes = cls._by_model.get(model)
        if passes is None or passes.key != key:
            passes = cls(model, layers, split, variables, key)
            cls._by_model[model] = passes
        return passes

    def __init__(self, model, layers, split, variables, key):
        self.key = key
        self.variables = variables
        self.seed_slot = keras.random.SeedGenerator(0)
        # The cache must not keep the model alive.
        self.eager = _Passes(weakref.proxy(model), layers, split)


class _TensorFlowPasses(_CompiledPasses):
    """The passes as one `tf.function`, traced once per shape and count."""

    _by_model = weakref.WeakKeyDictionary()

    def __init__(self, model, layers, split, variables, key):
        import tensorflow as tf

        super().__init__(model, layers, split, variables, key)
        eager, seed_slot = self.eager, self.seed_slot

        def run(rows, count):
            # A root name scope of our own: a graph refuses model names
            # that begin with "_" as roots, where eager calls take them.
            with tf.name_scope("mc_predict"):
                return eager(rows, count, seed_slot)

        self._run = tf.function(run)

    def __call__(self, rows, count, generator):
        self.seed_slot.state.assign(generator.state.value)
        outputs = self._run(rows, count)
        generator.state.assign(self.seed_slot.state.value)
        return outputs


class _JaxPasses(_CompiledPasses):
    """The passes as one jitted, stateless JAX function.

    It takes the values of the model's variables (and of the generator's
    state) as arguments.
    """

    _by_model = weakref.WeakKeyDictionary()

    def __init__(self, model, layers, split, variables, key):
        import jax

        super().__init__(model, layers, split, variables, key)
        eager, seed_slot = self.eager, self.seed_slot

        def run(values, seed_value, rows, count):
            mapping = [*zip(variables, values, strict=True)]
            mapping.append((seed_slot.state, seed_value))
            with keras.StatelessScope(state_mapping=mapping) as scope:
                outputs = eager(rows, count, seed_slot)
                return outputs, scope.get_current_value(seed_slot.state)

        self._run = jax.jit(run, static_argnums=(3,))

    def __call__(self, rows, count, generator):
        state = generator.state
        values = [variable.value for variable in self.variables]
        outputs, seed_value = self._run(values, state.value, rows, count)
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
