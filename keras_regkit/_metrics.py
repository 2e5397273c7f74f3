"""What a compiled model says about its metrics."""

import keras
import numpy as np


def direction(model, name):
    """'up', 'down' or None: the direction Keras records for a metric.

    `name` may carry the `val_` prefix of validation logs. The loss goes
    down; other metrics say so through the direction Keras gives them.
    """
    name = name.removeprefix("val_")
    for metric in getattr(model, "metrics", []):
        for inner in [metric, *getattr(metric, "metrics", [])]:
            if getattr(inner, "name", None) == name:
                found = getattr(inner, "_direction", None)
                if found in ("up", "down"):
                    return found
    return "down" if name == "loss" else None


def scalar(value, name, owner):
    """A logged metric as a Python float; arrays of one element included.

    Args:
        value: the logged value (a number, array or tensor).
        name: the metric's name, for the error message.
        owner: what reads it, for the error message ("EarlyStopping").

    Raises:
        ValueError: when the metric holds more than one number.
    """
    array = np.asarray(keras.ops.convert_to_numpy(value), "float64")
    if array.size != 1:
        raise ValueError(
            f"{owner} monitors one number, but `{name}` is an array of shape "
            f"{array.shape}. Monitor an averaged metric, such as "
            "F1Score(average='macro')."
        )
    return float(array.reshape(()))
