"""Callbacks for `fit`: dropout, early stopping, penalties, shrinkage."""

from keras_regkit.callbacks._dropout_scheduler import DropoutScheduler
from keras_regkit.callbacks._early_stopping import EarlyStopping
from keras_regkit.callbacks._penalty_scheduler import PenaltyScheduler
from keras_regkit.callbacks._proximal_step import ProximalStep
from keras_regkit.callbacks._regularization_monitor import (
    RegularizationMonitor,
)
from keras_regkit.callbacks._weight_shrinkage import WeightShrinkage

__all__ = [
    "DropoutScheduler",
    "EarlyStopping",
    "PenaltyScheduler",
    "ProximalStep",
    "RegularizationMonitor",
    "WeightShrinkage",
]
