"""Logs weight penalties, kernel norms and sparsity at the end of epochs."""

import os
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_regkit import _attach, _validation, selectors
from keras_regkit._penalty_state import current_penalty
from keras_regkit.callbacks._copying import copy_without_run_state
from keras_regkit.regularizers import GroupLasso
from keras_regkit.selectors import LayerSelector

# Weight names that count as kernels; biases, normalization scales and other
# weights never do.
_KERNEL_NAMES = (
    "kernel",
    "recurrent_kernel",
    "embeddings",
    "depthwise_kernel",
    "pointwise_kernel",
)
_HALF_PRECISION = ("float16", "bfloat16")


def _summary_ops():
    """`tf.summary`, which writes TensorBoard's files, as Keras's does."""
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ImportError(
            "RegularizationMonitor(log_dir=...) writes TensorBoard files "
            "with TensorFlow's tf.summary, as keras.callbacks.TensorBoard "
            "does, on every backend. Install it: pip install tensorflow-cpu "
            "(or tensorflow)."
        ) from error
    return tf.summary


def _to_floats(tensors):
    """Python floats of scalar tensors, one transfer to the host per dtype."""
    groups: dict[str, list[int]] = {}
    for index, tensor in enumerate(tensors):
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        groups.setdefault(dtype, []).append(index)
    values = [0.0] * len(tensors)
    for indices in groups.values():
        stacked = ops.convert_to_numpy(ops.stack([tensors[i] for i in indices]))
        for index, value in zip(indices, stacked.tolist(), strict=True):
            values[index] = float(value)
    return values


def _read(variable):
    """The value of `variable`, outside any gradient computation."""
    return ops.stop_gradient(ops.convert_to_tensor(variable))


def _as_float_tensor(x):
    """`x` as a tensor of float32 or float64 (wider halves, cast integers)."""
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if dtype in _HALF_PRECISION or not keras.backend.is_float_dtype(dtype):
        x = ops.cast(x, "float32")
    return x


class RegularizationMonitor(keras.callbacks.Callback):
    """Logs weight penalties, kernel norms and kernel sparsity every epoch.

    At the end of every epoch it adds to the epoch's logs, which `History`,
    `CSVLogger` and `TensorBoard` then record:

    - `penalty`: the total weight penalty, `sum(regularizer(w))` over the
      trainable weights that have a regularizer: what Keras adds to the
      loss, and the sum of `keras_regkit.penalties(model)`. 0.0 without
      penalties.
    - `penalty/<layer path>`: the same sum over the weights of one layer,
      for every layer with a penalised weight (whichever `layers` says).
    - `kernel_norm/<layer path>`: the L2 (Frobenius) norm
      `sqrt(sum(w**2))` of the kernel of each chosen layer.
    - `zero_fraction/<layer path>`: the fraction of that kernel's entries
      with `|w| <= zero_tol`.
    - `head_norm/<layer path>/<head>`: for a kernel penalised by
      `GroupLasso(heads=...)` (an attention projection), the L2 norm of
      each head's slice; 0.0 for a head switched off.

    Kernels are the weights named "kernel", "recurrent_kernel",
    "embeddings", "depthwise_kernel" or "pointwise_kernel", never biases.
    A layer with more than one (an LSTM cell, a separable convolution) gets
    one key per kernel, `kernel_norm/<layer path>/<weight name>`. Layer
    paths are those of `keras_regkit.selectors.walk`, such as
    `"encoder/dense"`, and a weight belongs to the innermost layer holding
    it.

    The numbers are computed where the weights live, with `keras.ops`, and
    brought to the host once per epoch. The values are those of the weights
    at the end of the epoch (on JAX, after `fit` has written its state back
    to the model).

    Callbacks listed before this one in `fit(callbacks=...)` do not see its
    keys; `History` always comes last and sees them.

    TensorBoard. List it before `keras.callbacks.TensorBoard` and its
    numbers are TensorBoard scalars like the loss (`epoch_penalty`,
    `epoch_kernel_norm/<layer path>`, ...). With `log_dir`, every
    `histogram_freq` epochs it also writes there, under `train/` as
    `TensorBoard(log_dir)` does, a histogram of each chosen kernel's
    entries (`weights/<layer path>`, TensorBoard's "Histograms" and
    "Distributions" tabs) and its fraction of zeros
    (`sparsity/<layer path>`), at step `epoch`. Writing them needs
    TensorFlow's `tf.summary`, as Keras's `TensorBoard` callback does, on
    every backend.

    Args:
        layers: which kernels to report: None (the default) for every layer
            with a kernel, or a selector (a name, glob, path, class,
            predicate or list; see `keras_regkit.selectors`). Penalties are
            reported for every layer regardless.
        zero_tol: non-negative float; entries with `|w| <= zero_tol` count as
            zeros. The default, 0.0, counts exact zeros only.
        log_dir: None, or the folder of a TensorBoard run (the `log_dir` of
            `keras.callbacks.TensorBoard`) to write the kernels' histograms
            and sparsity to.
        histogram_freq: positive int; with `log_dir`, write them every
            `histogram_freq` epochs (and at the last epoch of `fit` only if
            it is one of those).

    Example:

    >>> import keras, numpy as np
    >>> from keras_regkit import L1
    >>> from keras_regkit.callbacks import RegularizationMonitor
    >>> model = keras.Sequential([
    ...     keras.Input((3,)),
    ...     keras.layers.Dense(
    ...         2, kernel_initializer="ones", kernel_regularizer=L1(0.5),
    ...         name="dense",
    ...     ),
    ... ])
    >>> model.compile(keras.optimizers.SGD(learning_rate=0.0), "mse")
    >>> history = model.fit(
    ...     np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0,
    ...     callbacks=[RegularizationMonitor()],
    ... )
    >>> logs = {k: v[0] for k, v in history.history.items() if k != "loss"}
    >>> logs  # 0.5 * 6 weights of 1, and sqrt(6)
    {'penalty': 3.0, 'penalty/dense': 3.0, 'kernel_norm/dense': 2.44949,
     'zero_fraction/dense': 0.0}
    """

    def __init__(
        self,
        layers: LayerSelector | None = None,
        zero_tol: float = 0.0,
        log_dir: str | os.PathLike[str] | None = None,
        histogram_freq: int = 1,
    ) -> None:
        super().__init__()
        if layers is not None:
            selectors._check_selector(layers, "layers")
        self.layers = layers
        self.zero_tol = _validation.non_negative_float("zero_tol", zero_tol)
        if log_dir is not None:
            if not isinstance(log_dir, (str, os.PathLike)):
                raise TypeError(
                    "Invalid value received for argument `log_dir`. Expected "
                    f"None or a folder path. Received: log_dir={log_dir!r}"
                )
            log_dir = os.fspath(log_dir)
            _summary_ops()  # needs TensorFlow: say so now, not at epoch 1
        self.log_dir = log_dir
        self.histogram_freq = _validation.positive_int(
            "histogram_freq", histogram_freq
        )
        self._weights = None
        self._kernels = None
        self._writer = None

    def get_config(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "zero_tol": self.zero_tol,
            "log_dir": self.log_dir,
            "histogram_freq": self.histogram_freq,
        }

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._weights = _attach.owned_weights(self.model)
        self._kernels = self._find_kernels()
        if self.log_dir is not None:
            self._writer = _summary_ops().create_file_writer(
                os.path.join(self.log_dir, "train")
            )

    def on_epoch_end(
        self, epoch: int, logs: dict[str, Any] | None = None
    ) -> None:
        if logs is not None:
            logs.update(self.values())
        if self._writer is not None and (epoch + 1) % self.histogram_freq == 0:
            self.write_histograms(epoch)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        # Hold no reference to the model's weights.
        self._weights = None
        self._kernels = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __deepcopy__(self, memo):
        return copy_without_run_state(
            self, memo, ("_weights", "_kernels", "_writer")
        )

    def write_histograms(self, step: int) -> None:
        """Writes each kernel's histogram and sparsity to `log_dir` at `step`.

        `fit` calls it every `histogram_freq` epochs, with the epoch as
        `step`; it can also be called outside `fit` once the callback has a
        model (`set_model`).
        """
        if self.log_dir is None:
            raise ValueError(
                "RegularizationMonitor.write_histograms needs a `log_dir`: "
                "pass RegularizationMonitor(log_dir=...)."
            )
        summary = _summary_ops()
        _ = self.model  # on JAX, writes fit's state back to the model
        kernels = self._kernels
        if kernels is None:
            kernels = self._find_kernels()
        writer = self._writer or summary.create_file_writer(
            os.path.join(self.log_dir, "train")
        )
        with writer.as_default(step=step):
            for key, variable in kernels:
                w = np.asarray(ops.convert_to_numpy(variable), "float32")
                summary.histogram(f"weights/{key}", w)
                zeros = float(np.mean(np.abs(w) <= self.zero_tol))
                summary.scalar(f"sparsity/{key}", zeros)
        writer.flush()
        if writer is not self._writer:
            writer.close()

    def values(self) -> dict[str, float]:
        """The numbers this callback logs, for the model's current weights.

        `fit` calls it at the end of every epoch. It can also be called
        outside `fit`, once the callback has a model (`set_model`).

        Returns:
            A dict from the log keys described above to Python floats.
        """
        model = self.model  # on JAX, writes fit's state back to the model
        weights = self._weights or _attach.owned_weights(model)
        kernels = self._kernels
        if kernels is None:
            kernels = self._find_kernels()
        trainable = {id(v) for v in model.trainable_weights}
        tensors = []
        penalised = []
        for path, _, variable in weights:
            if id(variable) in trainable and variable.regularizer is not None:
                # As Keras does: a non-scalar penalty is summed.
                penalty = ops.sum(variable.regularizer(_read(variable)))
                tensors.append(_as_float_tensor(penalty))
                penalised.append(path)
        for _, variable in kernels:
            w = _as_float_tensor(_read(variable))
            tensors.append(ops.sqrt(ops.sum(ops.square(w))))
            zeros = ops.less_equal(ops.abs(w), self.zero_tol)
            tensors.append(ops.mean(ops.cast(zeros, w.dtype)))
        numbers = _to_floats(tensors)
        penalties, statistics = (
            numbers[: len(penalised)],
            numbers[len(penalised) :],
        )
        per_layer: dict[str, float] = {}
        for path, value in zip(penalised, penalties, strict=True):
            per_layer[path] = per_layer.get(path, 0.0) + value
        found = {"penalty": float(sum(penalties))}
        found.update({f"penalty/{p}": v for p, v in per_layer.items()})
        for index, (key, _) in enumerate(kernels):
            found[f"kernel_norm/{key}"] = statistics[2 * index]
            found[f"zero_fraction/{key}"] = statistics[2 * index + 1]
        for key, variable in kernels:
            penalty = current_penalty(variable)  # ProximalStep's too
            if isinstance(penalty, GroupLasso) and penalty.heads is not None:
                norms = penalty.group_norms(_read(variable))
                for head, norm in enumerate(norms.tolist()):
                    found[f"head_norm/{key}/{head}"] = norm
        return found

    def _find_kernels(self):
        """`(key, variable)` for each kernel to report, in layer order."""
        model = self.model
        weights = self._weights or _attach.owned_weights(model)
        kernels = [
            (path, layer, variable)
            for path, layer, variable in weights
            if variable.name in _KERNEL_NAMES
        ]
        if self.layers is not None:
            chosen = selectors.select(model, self.layers)
            if not chosen:
                raise ValueError(
                    f"RegularizationMonitor: the selector {self.layers!r} "
                    f"(argument `layers`) matches no layer of model "
                    f"{model.name!r}. Layers available: "
                    f"{selectors._available(model)}"
                )
            ids = {id(layer) for _, layer in chosen}
            with_kernels = list(dict.fromkeys(path for path, _, _ in kernels))
            kernels = [entry for entry in kernels if id(entry[1]) in ids]
            if not kernels:
                raise ValueError(
                    f"RegularizationMonitor: the selector {self.layers!r} "
                    "(argument `layers`) matches no layer with a kernel "
                    f"({', '.join(_KERNEL_NAMES)}) in model {model.name!r}. "
                    "Layers with kernels: "
                    f"{', '.join(repr(p) for p in with_kernels) or '(none)'}"
                )
        counts: dict[str, int] = {}
        for path, _, _ in kernels:
            counts[path] = counts.get(path, 0) + 1
        return [
            (
                path if counts[path] == 1 else f"{path}/{variable.name}",
                variable,
            )
            for path, _, variable in kernels
        ]
