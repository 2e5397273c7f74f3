"""Callbacks for `fit`: `DropoutScheduler`."""

from keras_regkit.callbacks.dropout_scheduler import DropoutScheduler

__all__ = ["DropoutScheduler"]
