"""Recomputes BatchNormalization statistics for a model's current weights.

Averaged weights (`callbacks.WeightAveraging`) were never trained with the
statistics their BatchNormalization layers hold: those are running averages
over the training steps' weights. As `torch.optim.swa_utils.update_bn`
does, one pass over the training inputs in training mode recomputes them,
each layer's moving mean and variance becoming the average over the batches
of the batch means and variances, weighted by batch size.
"""

from typing import Any

import keras
import numpy as np

from keras_regkit import _validation, selectors
from keras_regkit._weights import assign_values, copy_values


def batch_norm_layers(model):
    """The trainable `BatchNormalization` layers inside `model`.

    Frozen ones (`trainable=False`) are left out: Keras runs them in
    inference mode, and fine-tuning freezes them to keep their statistics.
    """
    return [
        layer
        for _, layer in selectors.walk(model)
        if isinstance(layer, keras.layers.BatchNormalization)
        and layer.trainable
    ]


def recompute_batch_norm(
    model: keras.Model, data: Any, batch_size: int = 128
) -> list[keras.layers.BatchNormalization]:
    """Sets every trainable BatchNormalization's statistics from `data`.

    The model runs once over `data` in training mode (`training=True`, so
    dropout is on, as in training), and each layer's `moving_mean` and
    `moving_variance` become the averages, weighted by batch size, of the
    means and (biased) variances of the batches it saw: the mean of the
    layer's inputs over all of `data`, and, for the variance, the mean of
    the batch variances, which is the variance over all of `data` when one
    batch holds it all. Trainable weights are not changed.

    If anything fails midway, the statistics are put back as they were.

    Args:
        model: a built `keras.Model`.
        data: the inputs: an array, or a list, tuple or dict of arrays, as
            the model takes them, split into batches of `batch_size` rows;
            or an iterable of batches (a `tf.data.Dataset`, a
            `keras.utils.PyDataset`, a generator), each the inputs or an
            `(x, y)` or `(x, y, sample_weight)` tuple as `fit` takes them.
        batch_size: rows per batch when `data` is arrays.

    Returns:
        The layers whose statistics were recomputed.

    Example:

    >>> import keras, numpy as np
    >>> from keras_regkit.callbacks import WeightAveraging
    >>> model = keras.Sequential([
    ...     keras.Input((2,)), keras.layers.BatchNormalization(name="bn"),
    ... ])
    >>> x = np.array([[0.0, 1.0], [2.0, 5.0]], dtype="float32")
    >>> [layer.name for layer in WeightAveraging.recompute_batch_norm(model, x)]
    ['bn']
    >>> keras.ops.convert_to_numpy(model.get_layer("bn").moving_mean).tolist()
    [1.0, 3.0]
    """
    batch_size = _validation.positive_int("batch_size", batch_size)
    layers = batch_norm_layers(model)
    if not layers:
        return []
    statistics = [v for layer in layers for v in _statistics(layer)]
    saved = copy_values(statistics)
    momenta = [layer.momentum for layer in layers]
    seen = 0
    try:
        for x in _input_batches(data, batch_size):
            rows = _rows(x)
            # moving = moving * m + batch * (1 - m) with m = seen / total
            # keeps the running statistics a size-weighted batch average.
            for layer in layers:
                layer.momentum = seen / (seen + rows)
            model(x, training=True)
            seen += rows
        if not seen:
            raise ValueError(
                "Invalid value received for argument `data`. Expected at "
                f"least one row of inputs. Received: data={data!r}"
            )
    except BaseException:
        assign_values(statistics, saved)
        raise
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return layers


def _statistics(layer):
    return [layer.moving_mean, layer.moving_variance]


def _input_batches(data, batch_size):
    """Yields the inputs of each batch of `data`."""
    leaves = keras.tree.flatten(data) if _is_arrays(data) else None
    if leaves:
        rows = _rows(data)
        for start in range(0, rows, batch_size):
            yield keras.tree.map_structure(
                lambda a, start=start: a[start : start + batch_size], data
            )
        return
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(
            "Invalid value received for argument `data`. Expected arrays of "
            "inputs or an iterable of batches. Received: data of type "
            f"{type(data).__name__}"
        )
    for batch in data:
        if isinstance(batch, tuple) and len(batch) in (2, 3):
            batch = batch[0]  # (x, y) or (x, y, sample_weight)
        yield batch


def _is_arrays(data):
    if isinstance(data, (str, bytes)):
        return False
    leaves = keras.tree.flatten(data)
    return bool(leaves) and all(
        isinstance(leaf, np.ndarray) or keras.ops.is_tensor(leaf)
        for leaf in leaves
    )


def _rows(x):
    return int(keras.tree.flatten(x)[0].shape[0])
