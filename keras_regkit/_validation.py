"""Argument checks shared by every public constructor and function.

Each check returns the value in the plain Python form that is stored on the
object and written to its config, or raises a `ValueError`/`TypeError` whose
message names the argument and shows the value received, in the shape Keras
uses: "Invalid value received for argument `l1`. Expected ... Received: l1=-1".
"""

import math
import numbers

import numpy as np


def _invalid(name, expected, value):
    return (
        f"Invalid value received for argument `{name}`. Expected {expected}. "
        f"Received: {name}={value!r}"
    )


def _as_real(name, value, expected):
    """Returns `value` as a Python float, or raises if it is not a number."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(_invalid(name, expected, value))
    if isinstance(value, np.ndarray):
        if value.shape != ():
            raise ValueError(
                _invalid(name, f"{expected}, not an array", value)
                + f" (shape {value.shape})"
            )
        value = value[()]
    if not isinstance(value, numbers.Real):
        raise TypeError(_invalid(name, expected, value))
    if isinstance(value, np.floating) and value.dtype.itemsize < 8:
        # np.float32(0.01) means 0.01: keep the decimal the user wrote rather
        # than its float32 rounding (0.009999999776...).
        return float(str(value))
    try:
        return float(value)
    except OverflowError:  # an integer past the largest float, 10**400
        # (whose digits may be too many to print)
        size = (
            f"an integer of {value.bit_length()} bits"
            if isinstance(value, int)
            else f"a {type(value).__name__}"
        )
        raise ValueError(
            f"Invalid value received for argument `{name}`. Expected "
            f"{expected}. Received: {name}={size}, too large for a float"
        ) from None


def non_negative_float(name, value):
    """Checks that `value` is a finite number >= 0 and returns it as a float."""
    expected = "a non-negative finite float"
    number = _as_real(name, value, expected)
    if not math.isfinite(number) or number < 0:
        raise ValueError(_invalid(name, expected, value))
    return number


def positive_float(name, value):
    """Checks that `value` is a finite number > 0 and returns it as a float."""
    expected = "a positive finite float"
    number = _as_real(name, value, expected)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(_invalid(name, expected, value))
    return number


def unit_interval_float(name, value):
    """Checks that `value` is a number in [0, 1] and returns it as a float."""
    expected = "a float in [0, 1]"
    number = _as_real(name, value, expected)
    if not 0.0 <= number <= 1.0:
        raise ValueError(_invalid(name, expected, value))
    return number


def open_unit_interval_float(name, value):
    """Checks that `value` is a number in (0, 1) and returns it as a float."""
    expected = "a float in (0, 1), both ends excluded"
    number = _as_real(name, value, expected)
    if not 0.0 < number < 1.0:
        raise ValueError(_invalid(name, expected, value))
    return number


def _integer(name, value, expected, minimum):
    """`value` as an int >= `minimum`, or the error that says what's wrong."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, numbers.Integral
    ):
        raise TypeError(_invalid(name, expected, value))
    if value < minimum:
        raise ValueError(_invalid(name, expected, value))
    return int(value)


def positive_int(name, value):
    """Checks that `value` is an integer >= 1 and returns it as an int."""
    return _integer(name, value, "a positive integer", 1)


def non_negative_int(name, value):
    """Checks that `value` is an integer >= 0 and returns it as an int."""
    return _integer(name, value, "a non-negative integer", 0)


def axis(name, value):
    """Checks an axis argument: an int, or a non-empty sequence of ints.

    Returns an `int`, or a `tuple` of distinct ints (a list from a JSON config
    comes back as a tuple).
    """
    expected = "an integer or a non-empty tuple of distinct integers"
    if isinstance(value, numbers.Integral) and not isinstance(
        value, (bool, np.bool_)
    ):
        return int(value)
    if not isinstance(value, (tuple, list)) or not value:
        raise TypeError(_invalid(name, expected, value))
    for item in value:
        if isinstance(item, (bool, np.bool_)) or not isinstance(
            item, numbers.Integral
        ):
            raise TypeError(_invalid(name, expected, value))
    if len(set(value)) != len(value):
        raise ValueError(_invalid(name, expected, value))
    return tuple(int(item) for item in value)


def rate(name, value):
    """Checks a drop rate: a number in [0, 1), returned as a float.

    1 is excluded: dropping everything leaves nothing to scale back up by
    `1 / (1 - rate)`.
    """
    expected = "a float in [0, 1)"
    number = _as_real(name, value, expected)
    if not 0.0 <= number < 1.0:  # also rejects NaN
        raise ValueError(_invalid(name, expected, value))
    return number


def seed(name, value):
    """Checks a random seed: None or a non-negative integer."""
    if value is None:
        return None
    return _integer(name, value, "None or a non-negative integer", 0)


def noise_shape(name, value):
    """Checks a dropout noise shape: None, or a sequence of ints >= 1 or None.

    Any iterable other than a string is taken, as by `keras.layers.Dropout`.
    Every refusal is a `ValueError`, also as in Keras: a string, a value
    that is not iterable, an entry that is not an integer or None, an entry
    below 1.

    Returns None or a tuple (a list from a JSON config comes back as a tuple).
    """
    expected = "None or a tuple of positive integers and None entries"
    if value is None:
        return None
    entries = _entries(name, expected, value)
    for item in entries:
        if item is None:
            continue
        if isinstance(item, (bool, np.bool_)) or not isinstance(
            item, numbers.Integral
        ):
            raise ValueError(_invalid(name, expected, value))
        if item < 1:
            raise ValueError(_invalid(name, expected, value))
    return tuple(None if item is None else int(item) for item in entries)


def _entries(name, expected, value):
    """The entries of an iterable `value` as a tuple; a `ValueError` if none.

    A string (or bytes) is refused although it is iterable: its characters
    are no shape.
    """
    if isinstance(value, (str, bytes)):
        raise ValueError(_invalid(name, expected, value))
    try:
        return tuple(value)
    except TypeError:
        raise ValueError(_invalid(name, expected, value)) from None


def optional_float(name, value):
    """Checks that `value` is None or a number, not NaN; returns it as such.

    Infinities are kept (a threshold at infinity is never reached); NaN is
    refused: every comparison with it is false, so it would silently make
    the argument mean something else.
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, numbers.Real
    ):
        raise TypeError(_invalid(name, "None or a number", value))
    number = float(value)
    if math.isnan(number):
        raise ValueError(
            _invalid(name, "None or a number that is not NaN", value)
        )
    return number


def flag(name, value):
    """Checks a flag: `True` or `False` (numpy bools too); returns a bool.

    Anything else is refused, a string above all: `bool("False")` is True.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(_invalid(name, "a bool (True or False)", value))
    return bool(value)


def finite_magnitude(name, value):
    """Checks that `value` is a finite number; returns `abs(value)`."""
    expected = "a finite number"
    number = _as_real(name, value, expected)
    if not math.isfinite(number):
        raise ValueError(_invalid(name, expected, value))
    return abs(number)


def choice(name, value, choices):
    """Checks that `value` is one of `choices` and returns it."""
    if value not in choices:
        expected = "one of " + ", ".join(repr(c) for c in choices)
        raise ValueError(_invalid(name, expected, value))
    return value


def schedule(name, value, returns):
    """Checks that `value` is a callable of the epoch; returns it.

    Args:
        name: the argument's name.
        value: the value received.
        returns: what the callable returns, for the message ("a rate").
    """
    if not callable(value):
        raise TypeError(
            f"Invalid value received for argument `{name}`. Expected a "
            f"callable taking the epoch and returning {returns}. Received: "
            f"{name}={value!r}"
        )
    return value


def verbosity(name, value, levels=(0, 1)):
    """Checks a `verbose` argument: one of `levels` (not a bool); returns it."""
    if isinstance(value, bool) or value not in levels:
        expected = ", ".join(repr(level) for level in levels[:-1])
        raise ValueError(_invalid(name, f"{expected} or {levels[-1]!r}", value))
    return value


def scheduled_value(owner, epoch, name, value, where, expected, accept):
    """Checks a value a schedule returned for `epoch`; returns it as a float.

    Args:
        owner: the callback, for the message ("DropoutScheduler").
        epoch: the epoch the schedule was asked about.
        name: what the value is ("rate", "factor").
        value: what the schedule returned.
        where: `""`, or which key of a dict it came from (`" for 'a'"`).
        expected: what is accepted, for the message.
        accept: a predicate on the value as a float.

    Raises:
        ValueError: unless `value` is a real number (not a bool) accepted
            by `accept`, naming the epoch and showing the value.
    """
    is_number = isinstance(value, numbers.Real) and not isinstance(
        value, (bool, np.bool_)
    )
    if not is_number or not accept(float(value)):
        raise ValueError(
            f"{owner}: the schedule returned an invalid {name}{where} for "
            f"epoch {epoch}. Expected {expected}. Received: {name}={value!r}"
        )
    return float(value)
