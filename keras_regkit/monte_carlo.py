"""Monte-Carlo dropout prediction: the mean and spread of stochastic passes."""

import contextlib
import math
import weakref

import keras
import numpy as np

from keras_regkit import _validation, selectors
from keras_regkit.layers._stochastic import (
    CannotTile,
    MonteCarloDraw,
    StochasticLayer,
)

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
    uncertainty. Every `keras_regkit.layers.Dropout` and `DropPath` in the
    model drops units during these passes, whether or not it was built with
    `mc=True`; everything else runs in inference mode (`training=False`:
    batch normalization uses its moving statistics, Keras's own `Dropout`
    is off).

    Rather than calling the model `samples` times, each forward pass stacks
    several copies of a chunk of rows, so the model sees one large batch.
    This assumes, as `predict` does, that the model treats the rows of a
    batch independently at inference. In a `keras.Sequential` model whose
    first stochastic layer is one of its own layers, the copies are made by
    that layer: the deterministic layers before it run once per row, not
    once per sample.

    The model is left exactly as it was: its weights, its layers' rates and
    seed generator states, its compiled functions. The masks come from a
    generator of their own, seeded by `seed`.

    Args:
        model: a Keras model containing at least one keras_regkit `Dropout`
            or `DropPath` layer.
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
    >>> from keras_regkit.layers import Dropout
    >>> model = keras.Sequential([
    ...     keras.Input((3,)),
    ...     keras.layers.Dense(16, activation="relu"),
    ...     Dropout(0.5),
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
    if batch_size is None:
        batch_size = _default_batch_size(model, leaves)
    copies = min(samples, batch_size)
    chunk = max(1, batch_size // copies)

    sampler = _Sampler(model, layers, seed)
    statistics = None
    try:
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            rows_slice = slice(start, stop)
            part = keras.tree.map_structure(
                lambda a, rows_slice=rows_slice: a[rows_slice], inputs
            )
            moments = _Moments()
            for done in range(0, samples, copies):
                count = min(copies, samples - done)
                moments.add(sampler(part, count), count)
            if statistics is None:
                statistics = _Results(moments, rows)
            statistics.store(moments, start, stop)
    finally:
        sampler.switch_off()
    return statistics.mean, statistics.std


def _stochastic_layers(model):
    layers = [
        layer
        for _, layer in selectors.walk(model)
        if isinstance(layer, StochasticLayer)
    ]
    if layers:
        return layers
    keras_dropout = [
        path
        for path, layer in selectors.walk(model)
        if isinstance(layer, keras.layers.Dropout)
    ]
    hint = ""
    if keras_dropout:
        hint = (
            f" Its keras.layers.Dropout layers ({', '.join(keras_dropout)}) "
            "are off at inference; use keras_regkit.layers.Dropout instead."
        )
    raise ValueError(
        "mc_predict needs a model with at least one keras_regkit "
        "Dropout or DropPath layer; without one every pass gives the same "
        f"prediction. Model {model.name!r} has none.{hint}"
    )


def _first_layer_if_it_can_tile(model):
    """The Sequential model's first stochastic layer, if it is its own.

    Everything after a Sequential model's own layer sees only that layer's
    output, so the layer can stack the copies itself. Not so when a
    stochastic layer nested in a sub-model comes first.
    """
    if not isinstance(model, keras.Sequential):
        return None
    for layer in model.layers:
        if isinstance(layer, StochasticLayer):
            return layer
        if any(
            isinstance(inner, StochasticLayer)
            for _, inner in selectors.walk(layer)
        ):
            return None
    return None


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


def _default_batch_size(model, leaves):
    """Rows per pass so that all activations of a pass fit PASS_ELEMENTS."""
    input_size = sum(_row_size(leaf.shape) for leaf in leaves)
    output_size = 0
    for _, layer in selectors.walk(model):
        try:
            outputs = layer.output
        except (AttributeError, ValueError):
            continue
        output_size += sum(
            _row_size(tensor.shape) for tensor in keras.tree.flatten(outputs)
        )
    if output_size == 0:
        output_size = _UNKNOWN_MODEL_FACTOR * input_size
    budget = PASS_ELEMENTS.get(keras.backend.backend(), DEFAULT_PASS_ELEMENTS)
    return max(1, budget // max(1, input_size + output_size))


def _no_gradient_tape():
    """PyTorch records every eager op for autograd unless told not to."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


class _Sampler:
    """Runs the model with its stochastic layers switched to sampling.

    Each call makes `count` passes over some rows at once, with masks drawn
    from a generator of its own. On JAX, whose eager calls dispatch one
    small kernel at a time, the passes run through one compiled function,
    kept from one `mc_predict` call to the next.
    """

    def __init__(self, model, layers, seed):
        self.model = model
        self.layers = layers
        self.tiling_layer = _first_layer_if_it_can_tile(model)
        self.generator = keras.random.SeedGenerator(seed)
        self._compiled = None
        if keras.backend.backend() == "jax" and model.built:
            self._compiled = _JaxPasses.of(model, layers, self.tiling_layer)
            self._values = self._compiled.current_values()

    def __call__(self, part, count):
        """Outputs of `count` passes over `part`, shaped (count, rows, ...)."""
        try:
            outputs = self._run(part, count, self.tiling_layer)
        except CannotTile:
            self.tiling_layer = None
            outputs = self._run(part, count, None)
        return keras.tree.map_structure(
            lambda y: _split(keras.ops.convert_to_numpy(y), count), outputs
        )

    def _run(self, part, count, tiling_layer):
        if tiling_layer is None:
            part = keras.tree.map_structure(
                lambda a: np.tile(a, (count,) + (1,) * (a.ndim - 1)), part
            )
        if self._compiled is not None:
            state = self.generator.state
            outputs, seed_value = self._compiled.run(
                self._values, state.value, part, count, tiling_layer is not None
            )
            state.assign(seed_value)
            return outputs
        _switch_on(self.layers, self.generator, count, tiling_layer)
        with _no_gradient_tape():
            return self.model(part, training=False)

    def switch_off(self):
        for layer in self.layers:
            layer._monte_carlo = None


def _switch_on(layers, generator, count, tiling_layer):
    """Puts `layers` in sampling mode; `tiling_layer` makes the copies."""
    draw = MonteCarloDraw(generator, count)
    for layer in layers:
        layer._monte_carlo = draw
    if tiling_layer is not None:
        tiling_layer._monte_carlo = MonteCarloDraw(generator, count, tile=True)


class _JaxPasses:
    """A model's sampling passes as one jitted, stateless JAX function.

    `run(values, seed_value, inputs, count, tile)` takes the values of the
    model's variables and of a seed generator's state, and returns the
    outputs and the generator's next state. One instance is kept per model
    (while the model lives and its variables stay the same), so that JAX's
    compilation cache serves later `mc_predict` calls.
    """

    _by_model = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, model, layers, tiling_layer):
        variables = [*model.trainable_variables, *model.non_trainable_variables]
        key = (tuple(map(id, variables)), tuple(map(id, layers)))
        passes = cls._by_model.get(model)
        if passes is None or passes.key != key:
            passes = cls(model, layers, tiling_layer, variables, key)
            cls._by_model[model] = passes
        return passes

    def __init__(self, model, layers, tiling_layer, variables, key):
        import jax

        self.key = key
        self.variables = variables
        # The traced function routes the seed through this generator's
        # state; each call passes in the value of its own generator.
        seed_slot = keras.random.SeedGenerator(0)
        model_ref = weakref.ref(model)  # the cache must not keep it alive

        def run(values, seed_value, inputs, count, tile):
            mapping = [*zip(variables, values, strict=True)]
            mapping.append((seed_slot.state, seed_value))
            with keras.StatelessScope(state_mapping=mapping) as scope:
                _switch_on(
                    layers, seed_slot, count, tiling_layer if tile else None
                )
                outputs = model_ref()(inputs, training=False)
                return outputs, scope.get_current_value(seed_slot.state)

        self.run = jax.jit(run, static_argnums=(3, 4))

    def current_values(self):
        return [variable.value for variable in self.variables]


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
