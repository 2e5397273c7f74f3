"""Copies of weights kept where they live, and putting them back."""

import keras


def copy_values(variables, previous=None):
    """Copies of the values of `variables`, on their device.

    Nothing goes to the host. The copies replace those in `previous` one
    variable at a time, so at most one copy of the weights (and one weight
    more) exists besides the variables themselves.

    Args:
        variables: a list of `keras.Variable`.
        previous: the list a previous call returned, to reuse, or `None`.

    Returns:
        A list of tensors, one per variable.
    """
    if previous is None or len(previous) != len(variables):
        previous = [None] * len(variables)
    for index, variable in enumerate(variables):
        previous[index] = None  # free the old copy first
        previous[index] = keras.ops.copy(
            keras.ops.stop_gradient(variable.value)
        )
    return previous


def assign_values(variables, values):
    """Assigns `values` (from `copy_values`) back to `variables`.

    Each variable gets a fresh copy, so `values` stay usable afterwards: on
    JAX a variable holds the very array it is assigned, and Keras's compiled
    steps donate (delete) those arrays when they run.
    """
    for variable, value in zip(variables, values, strict=True):
        variable.assign(keras.ops.copy(value))
