"""Turning the Keras dropout layers of an existing model into ours."""

import contextlib
import warnings

import keras

from keras_regkit import (
    _penalty_state,
    _saving,
    _validation,
    selectors,
)
from keras_regkit.layers._dropout import Dropout

# Where Keras's spatial dropouts share their masks: every axis but the
# batch and the channels, for inputs of rank 3, 4 and 5.
_SPATIAL = {
    keras.layers.SpatialDropout1D: 1,
    keras.layers.SpatialDropout2D: 2,
    keras.layers.SpatialDropout3D: 3,
}


def convert_dropout(
    model: keras.layers.Layer, *, mc: bool = False
) -> list[str]:
    """Turns a model's Keras dropout layers into keras_regkit `Dropout`s.

    In place: every `keras.layers.Dropout`, `SpatialDropout1D`,
    `SpatialDropout2D` and `SpatialDropout3D` inside `model`, however
    deeply nested (in sub-models, KerasHub layers, `MultiHeadAttention`),
    becomes a `keras_regkit.layers.Dropout` with the same name, rate, seed
    and seed generator state, and a `noise_shape` that drops what the
    Keras layer drops (whole channels for the spatial ones). The layer
    objects stay where they are, so the model's structure and weights are
    untouched, and its predictions and training steps are the same as
    before; but now `layer.rate = x`, `keras_regkit.callbacks.
    DropoutScheduler` and `mc=True` apply, to pretrained models too. The
    model's compiled functions are rebuilt.

    Left alone: subclasses of these layers, `GaussianDropout` and
    `AlphaDropout` (other noise, which `keras_regkit.mc_predict` samples
    as they are), and the attention dropout of a `MultiHeadAttention`
    built with `dropout=0`, which that layer never calls.

    The converted model saves and loads with its new layers where Keras
    saves their configs (Sequential and Functional models, nested ones
    included). Layers that their parent builds from its own arguments
    (`MultiHeadAttention`'s dropout, KerasHub's transformer layers) come
    back from `keras.saving.load_model` as Keras's layers: a warning names
    them; convert the loaded model again.

    Args:
        model: a `keras.Model` or `keras.layers.Layer`, changed in place.
        mc: bool, keyword-only: the converted layers' `mc` (drop units at
            inference too).

    Returns:
        The paths of the converted layers (see `keras_regkit.selectors`).

    Raises:
        ValueError: for a layer with rate 1, which keras_regkit's `Dropout`
            refuses (it would leave nothing to scale), before any change.

    Example:

    >>> import keras
    >>> from keras_regkit.layers import convert_dropout
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8),
    ...     keras.layers.Dropout(0.5, name="dropout"),
    ...     keras.layers.Dense(1),
    ... ])
    >>> convert_dropout(model)
    ['dropout']
    >>> layer = model.get_layer("dropout")
    >>> type(layer).__module__, layer.rate
    ('keras_regkit.layers._dropout', 0.5)
    >>> layer.rate = 0.2  # takes effect at the next step, compiled or not
    """
    selectors._check_model(model)
    mc = _validation.flag("mc", mc)
    found = _convertible(model)
    whole = [path for path, layer in found if layer.rate >= 1]
    if whole:
        raise ValueError(
            "keras_regkit's Dropout takes rates below 1; these layers drop "
            f"everything (rate 1): {', '.join(whole)}. Nothing was changed."
        )
    for _, layer in found:
        _convert(layer, _noise_shape(layer), mc)
    recorded = _saving.recorded_layers(model)
    unsaved = [path for path, layer in found if id(layer) not in recorded]
    if unsaved:
        warnings.warn(
            f"These converted layers will be Keras's Dropout layers again "
            f"after `keras.saving.load_model`: {', '.join(unsaved)}. Their "
            "parent layers rebuild them from their own arguments; call "
            "`convert_dropout` on the loaded model.",
            UserWarning,
            stacklevel=2,
        )
    _penalty_state.refresh_compiled_functions(model)
    return [path for path, _ in found]


def _convertible(model):
    """`(path, layer)` of the Keras dropout layers to convert, in order."""
    never_called = {
        id(getattr(layer, "_dropout_layer", None))
        for _, layer in selectors.walk(model)
        if isinstance(layer, keras.layers.MultiHeadAttention)
        and layer.dropout == 0
    }
    kinds = (keras.layers.Dropout, *_SPATIAL)
    return [
        (path, layer)
        for path, layer in selectors.walk(model)
        if type(layer) in kinds and id(layer) not in never_called
    ]


def _noise_shape(layer):
    shared = _SPATIAL.get(type(layer))
    if shared is None:
        return layer.noise_shape
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return (None, None) + (1,) * shared
    return (None,) + (1,) * shared + (None,)


def _convert(layer, noise_shape, mc):
    state = vars(layer)
    rate = state.pop("rate")
    state.pop("data_format", None)
    layer.__class__ = Dropout
    if "seed_generator" not in state:  # Keras makes none at rate 0
        with _unlocked(layer):
            layer.seed_generator = keras.random.SeedGenerator(
                layer.seed, name=f"{layer.name}_seed_generator"
            )
    layer._init_state(rate, mc)
    layer.noise_shape = _validation.noise_shape("noise_shape", noise_shape)


@contextlib.contextmanager
def _unlocked(layer):
    """Lets a built layer take new state, as Keras's `quantize` does."""
    locked = layer._tracker.locked
    layer._tracker.unlock()
    try:
        yield
    finally:
        if locked:
            layer._lock_state()
