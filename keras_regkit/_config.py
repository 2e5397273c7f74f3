"""Config, equality and repr for objects described by their arguments."""

from typing import Any

# The package name every saved class is registered under: a `.keras` file
# names them "keras_regkit>L2", "keras_regkit>Dropout", ...
PACKAGE = "keras_regkit"


class ConfigByKeys:
    """Mixin: `get_config`, `==`, `hash` and `repr` from `_config_keys`.

    Subclasses list their constructor arguments in `_config_keys` and store
    each on a same-named attribute as a plain Python value.
    """

    _config_keys: tuple[str, ...] = ()

    def get_config(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self._config_keys}

    def __eq__(self, other):
        return type(self) is type(other) and (
            self.get_config() == other.get_config()
        )

    def __hash__(self):
        return hash((type(self), tuple(self.get_config().items())))

    def __repr__(self):
        arguments = ", ".join(
            f"{key}={value!r}" for key, value in self.get_config().items()
        )
        return f"{type(self).__name__}({arguments})"
