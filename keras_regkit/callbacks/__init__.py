"""Callbacks for `fit`: dropout, early stopping, penalties, shrinkage."""

from keras_regkit.callbacks.dropout_scheduler import DropoutScheduler
from keras_regkit.callbacks.early_stopping import EarlyStopping
from keras_regkit.callbacks.penalty_scheduler import PenaltyScheduler
from keras_regkit.callbacks.proximal_step import ProximalStep
from keras_regkit.callbacks.regularization_monitor import (
    RegularizationMonitor,
)
from keras_regkit.callbacks.weight_shrinkage import WeightShrinkage

__all__ = [
    "DropoutScheduler",
    "EarlyStopping",
    "PenaltyScheduler",
    "ProximalStep",
    "RegularizationMonitor",
    "WeightShrinkage",
]
