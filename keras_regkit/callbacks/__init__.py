"""Callbacks for `fit`: `DropoutScheduler`, `EarlyStopping`."""

from keras_regkit.callbacks.dropout_scheduler import DropoutScheduler
from keras_regkit.callbacks.early_stopping import EarlyStopping

__all__ = ["DropoutScheduler", "EarlyStopping"]
