"""Layers that regularize by noise: `Dropout` and `DropPath`.

Both follow Keras's `training` flag exactly as `keras.layers.Dropout` does,
can stay on at inference (`mc=True`) and change their rate between epochs of
a compiled model (`layer.rate = ...`).
"""

from keras_regkit.layers.drop_path import DropPath
from keras_regkit.layers.dropout import Dropout

__all__ = ["DropPath", "Dropout"]
