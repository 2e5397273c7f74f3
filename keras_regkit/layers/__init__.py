"""Layers that regularize by noise: `Dropout` and `DropPath`.

Both follow Keras's `training` flag exactly as `keras.layers.Dropout` does,
can stay on at inference (`mc=True`) and change their rate between epochs of
a compiled model (`layer.rate = ...`). `convert_dropout` turns the Keras
dropout layers of an existing model, a pretrained one for instance, into
these.
"""

from keras_regkit.layers._conversion import convert_dropout
from keras_regkit.layers._drop_path import DropPath
from keras_regkit.layers._dropout import Dropout

__all__ = ["DropPath", "Dropout", "convert_dropout"]
