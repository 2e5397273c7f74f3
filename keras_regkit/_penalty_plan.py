"""Carrying weight penalties to another copy of a model, across a save.

`model.save()` keeps the penalties of most layers in the model's config, but
not those set on layers that their parent rebuilds from its own arguments
(KerasHub's transformer layers and backbones, subclassed models); `regularize`
warns when that happens. A `PenaltyPlan` records the penalty of every weight,
saves itself as JSON beside the model, and applies the penalties to the
loaded model.
"""

import json
import os
from typing import Any

import keras

from keras_regkit import (
    _attach,
    _penalty_state,
    _saving,
    regularizers,
    selectors,
)


class PenaltyPlan:
    """The weight penalties of a model, by layer path and weight name.

    Make one with `PenaltyPlan.of(model)`; `apply(model)` sets the same
    penalties on another copy of the model (one built from the same code or
    loaded from the same file: its layers have the same paths). `save` and
    `load` carry it across processes, as a JSON file. The penalties come
    back exactly: their configs hold Python floats, which JSON writes to the
    last bit.

    Args:
        penalties: a dict `{layer_path: {weight_name: penalty}}`, the
            penalties as regularizer objects (or anything
            `keras_regkit.regularizers.get` understands).

    Example:

    >>> import os, tempfile
    >>> import keras
    >>> from keras_regkit import L2, PenaltyPlan, regularize
    >>> def make():
    ...     return keras.Sequential(
    ...         [keras.Input((4,)), keras.layers.Dense(2, name="dense")]
    ...     )
    >>> model = regularize(make(), kernel=L2(1e-4))
    >>> path = os.path.join(tempfile.mkdtemp(), "penalties.json")
    >>> PenaltyPlan.of(model).save(path)
    >>> other = PenaltyPlan.load(path).apply(make())
    >>> other.get_layer("dense").kernel.regularizer
    L2(l2=0.0001)
    """

    def __init__(self, penalties: dict[str, dict[str, Any]]) -> None:
        if not isinstance(penalties, dict):
            raise TypeError(
                "Invalid value received for argument `penalties`. Expected "
                "a dict {layer_path: {weight_name: penalty}}. Received: "
                f"penalties={penalties!r}"
            )
        self.penalties: dict[str, dict[str, Any]] = {}
        for path, weights in penalties.items():
            if not isinstance(path, str) or not isinstance(weights, dict):
                raise TypeError(
                    "Invalid value received for argument `penalties`. "
                    "Expected a dict {layer_path: {weight_name: penalty}}. "
                    f"Received: {path!r}: {weights!r}"
                )
            self.penalties[path] = {
                name: regularizers._resolve(
                    penalty, f"penalties[{path!r}][{name!r}]"
                )
                for name, penalty in weights.items()
            }

    @classmethod
    def of(cls, model: keras.layers.Layer) -> "PenaltyPlan":
        """The plan of every weight of `model` that has a penalty.

        Frozen weights are included: their penalties count again once they
        are trainable.
        """
        selectors._check_model(model)
        found: dict[str, dict[str, Any]] = {}
        for path, _, variable in _attach.owned_weights(model):
            if variable.regularizer is not None:
                found.setdefault(path, {})[variable.name] = variable.regularizer
        return cls(found)

    def apply(self, model: keras.layers.Layer) -> keras.layers.Layer:
        """Sets the plan's penalties on `model`, in place, and returns it.

        Each weight gets its penalty on the variable (what `model.losses`
        reads) and, where the layer has the matching `*_regularizer`
        attribute, on the layer too (what its config saves). Weights the
        plan does not name are left as they are. The model's compiled
        train and test functions are rebuilt.

        Raises:
            ValueError: when a layer path or weight name of the plan is not
                in `model`, before anything changes.
        """
        selectors._check_model(model)
        weights = {
            (path, variable.name): (layer, variable)
            for path, layer, variable in _attach.owned_weights(model)
        }
        missing = [
            f"{path}/{name}"
            for path, names in self.penalties.items()
            for name in names
            if (path, name) not in weights
        ]
        if missing:
            raise ValueError(
                "The plan names weights that the model does not have: "
                f"{', '.join(missing)}. Layers available: "
                f"{selectors._available(model)}"
            )
        for path, names in self.penalties.items():
            for name, penalty in names.items():
                layer, variable = weights[(path, name)]
                _attach.set_weight_penalty(layer, variable, penalty)
        _saving.sync_attention_penalties(model)
        _penalty_state.refresh_compiled_functions(model)
        return model

    def get_config(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The plan as JSON-ready data."""
        return {
            path: {
                name: keras.saving.serialize_keras_object(penalty)
                for name, penalty in names.items()
            }
            for path, names in self.penalties.items()
        }

    @classmethod
    def from_config(cls, config: dict[str, dict[str, Any]]) -> "PenaltyPlan":
        return cls(config)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the plan to `path` as JSON."""
        with open(path, "w", encoding="utf-8") as file:
            json.dump(self.get_config(), file, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "PenaltyPlan":
        """The plan saved at `path` (`import keras_regkit` first)."""
        with open(path, encoding="utf-8") as file:
            return cls.from_config(json.load(file))

    def __repr__(self):
        count = sum(len(names) for names in self.penalties.values())
        return f"PenaltyPlan({count} weights in {len(self.penalties)} layers)"
