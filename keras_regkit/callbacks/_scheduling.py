"""What `DropoutScheduler` and `PenaltyScheduler` share.

Both take a schedule, a function of the epoch that returns one value for
every scheduled layer, or a dict from layer selectors to values. One rule
reads such a dict, in both: the first key that matches a layer, or a layer
enclosing it, decides the layer's value, as `regularize(rules=...)` does;
layers no key matches are left as they are; a key that matches no
scheduled layer is an error, since it is most likely a typo.
"""

from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import keras

from keras_regkit import _validation, selectors
from keras_regkit.selectors import LayerSelector

# `schedule(epoch)`: one value for every scheduled layer, or a dict from
# selectors to values.
Schedule: TypeAlias = Callable[[int], float | Mapping[Any, float]]


class EpochScheduler(keras.callbacks.Callback):
    """A callback that sets a value on chosen layers at every epoch.

    Subclasses say what the value is (`_value_name`, `_expected`,
    `_accept`) and what to do with it.
    """

    _value_name = "value"
    _expected = "a float"

    def __init__(
        self,
        schedule: Schedule,
        layers: LayerSelector | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__()
        if layers is not None:
            selectors._check_selector(layers, "layers")
        self.schedule = _validation.schedule(
            "schedule", schedule, f"a {self._value_name}"
        )
        self.layers = layers
        self.verbose = _validation.verbosity("verbose", verbose)

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, as given (the schedule itself)."""
        return {
            "schedule": self.schedule,
            "layers": self.layers,
            "verbose": self.verbose,
        }

    @staticmethod
    def _accept(value):
        return True

    def _scheduled(self, epoch, paths):
        """`{path: value}` for `epoch`, over the scheduled layer `paths`.

        A plain value goes to every path; a dict gives values only to the
        paths one of its keys decides (see the module docstring).

        Raises:
            ValueError: for a value the subclass does not accept, or a key
                that matches no path, naming the epoch.
        """
        value = self.schedule(epoch)
        if not isinstance(value, Mapping):
            checked = self._checked(epoch, value, "")
            return dict.fromkeys(paths, checked)
        keys = list(value)
        for key in keys:
            selectors._check_selector(key, name="schedule key")
        wanted = set(paths)
        index_of = {
            path: index
            for path, _, index in selectors._first_match(keys, self.model)
            if path in wanted
        }
        scheduled = {}
        for path in dict.fromkeys(paths):
            if path in index_of:
                key = keys[index_of[path]]
                scheduled[path] = self._checked(
                    epoch, value[key], f" for {key!r}"
                )
        used = set(index_of.values())
        unused = [key for index, key in enumerate(keys) if index not in used]
        if unused:
            raise ValueError(
                f"{type(self).__name__}: the schedule's "
                f"{self._value_name}s for epoch {epoch} name layers that "
                f"are not scheduled: {unused}. Scheduled layers: "
                f"{list(dict.fromkeys(paths))}"
            )
        return scheduled

    def _checked(self, epoch, value, where):
        return _validation.scheduled_value(
            type(self).__name__,
            epoch,
            self._value_name,
            value,
            where,
            self._expected,
            self._accept,
        )
