"""Callbacks for `fit`: `DropoutScheduler`, `EarlyStopping`."""

from keras_regkit.callbacks.dropout_scheduler import DropoutScheduler
from keras_regkit.callbacks.early_stopping import EarlyStopping
from keras_regkit.callbacks.penalty_scheduler import PenaltyScheduler
from keras_regkit.callbacks.proximal_step import ProximalStep
from keras_regkit.callbacks.regularization_monitor import (
    RegularizationMonitor,
)

__all__ = [
    "DropoutScheduler",
    "EarlyStopping",
    "PenaltyScheduler",
    "ProximalStep",
    "RegularizationMonitor",
]
