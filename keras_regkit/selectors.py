"""Finding and choosing the layers of a model.

`walk` lists every layer inside a model, nested models, RNN cells and
wrapped layers included, each with a path such as `"encoder/dense_1"`.
A *selector* chooses among them; it is one of

- a string: a layer name or a glob pattern (`"dense*"`, `"encoder/*"`),
  matched against both the layer's name and its path;
- a layer class (`keras.layers.Dense`): its instances, subclasses included;
- a predicate: a callable taking a layer and returning a bool;
- a list or tuple of the above: any of them.

A selector that matches a container (a nested model, an RNN layer, a
wrapper) also selects everything inside it.

Example:

>>> import keras
>>> inner = keras.Sequential(
...     [keras.Input((4,)), keras.layers.Dense(4, name="inner_dense")],
...     name="encoder",
... )
>>> model = keras.Sequential(
...     [keras.Input((4,)), inner, keras.layers.Dense(1, name="head")]
... )
>>> [path for path, _ in walk(model)]
['encoder', 'encoder/inner_dense', 'head']
>>> [path for path, _ in select(model, "encoder")]
['encoder', 'encoder/inner_dense']
"""

import fnmatch
import inspect
from collections.abc import Callable
from typing import TypeAlias

import keras

__all__ = [
    "LayerSelector",
    "matches",
    "select",
    "sublayers",
    "walk",
]

_OneSelector: TypeAlias = (
    str | type[keras.layers.Layer] | Callable[[keras.layers.Layer], bool]
)
LayerSelector: TypeAlias = (
    _OneSelector | list[_OneSelector] | tuple[_OneSelector, ...]
)
"""A selector: a name or glob pattern, a layer class, a predicate, or a
list or tuple of these (see the module docstring)."""


def sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers directly inside `layer`, in the order Keras tracks them."""
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    found = []
    for value in vars(layer).values():
        if isinstance(value, keras.layers.Layer):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, keras.layers.Layer))
        elif isinstance(value, dict):
            found.extend(
                v for v in value.values() if isinstance(v, keras.layers.Layer)
            )
    return found


def _walk_with_ancestors(root):
    """Yields `(path, layer, ancestors)` for every layer inside `root`."""
    seen = {id(root)}

    def visit(layer, prefix, ancestors):
        for child in sublayers(layer):
            if id(child) in seen or isinstance(child, keras.layers.InputLayer):
                continue
            seen.add(id(child))
            path = f"{prefix}{child.name}"
            yield path, child, ancestors
            yield from visit(child, path + "/", ancestors + ((path, child),))

    if not isinstance(root, keras.Model):
        yield root.name, root, ()
        yield from visit(root, root.name + "/", ((root.name, root),))
    else:
        yield from visit(root, "", ())


def walk(model: keras.layers.Layer) -> list[tuple[str, keras.layers.Layer]]:
    """Lists every layer inside `model`, depth first.

    Args:
        model: a `keras.Model` (Sequential, Functional, subclassed) or a
            `keras.layers.Layer`. A model itself is not listed, a layer is.

    Returns:
        A list of `(path, layer)` pairs. The path joins the names of the
        enclosing layers with `/`. Input layers are left out; a layer shared
        by several parents appears once, under its first path.
    """
    _check_model(model)
    return [(path, layer) for path, layer, _ in _walk_with_ancestors(model)]


def _available(model):
    """The paths of `model`'s layers, quoted, for error messages."""
    names = [path for path, _ in walk(model)]
    return ", ".join(repr(name) for name in names) or "(none)"


def _check_model(model, name="model"):
    """Raises a `TypeError` unless `model` is a Keras layer or model."""
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"Invalid value received for argument `{name}`. Expected a "
            f"keras.Model or keras.layers.Layer. Received: {name}={model!r} "
            f"of type {type(model).__name__}"
        )


def _check_selector(selector, name="layers"):
    """Raises a `TypeError` unless `selector` is a valid selector."""
    items = selector if isinstance(selector, (list, tuple)) else (selector,)
    if isinstance(selector, (list, tuple)) and not selector:
        raise ValueError(
            f"Invalid value received for argument `{name}`. Expected a "
            f"non-empty list of selectors. Received: {name}={selector!r}"
        )
    for item in items:
        is_layer_class = inspect.isclass(item) and issubclass(
            item, keras.layers.Layer
        )
        if isinstance(item, str) or is_layer_class:
            continue
        # Layer instances are callable too, but are not predicates.
        is_layer = isinstance(item, keras.layers.Layer)
        if callable(item) and not inspect.isclass(item) and not is_layer:
            continue
        raise TypeError(
            f"Invalid value received for argument `{name}`. Expected a layer "
            "name or glob pattern, a layer class, a predicate, or a list of "
            f"these. Received: {name}={selector!r}"
        )


def matches(
    selector: LayerSelector, path: str, layer: keras.layers.Layer
) -> bool:
    """Whether `selector` picks the layer itself (not its ancestors)."""
    if isinstance(selector, (list, tuple)):
        return any(matches(item, path, layer) for item in selector)
    if isinstance(selector, str):
        return fnmatch.fnmatchcase(layer.name, selector) or (
            fnmatch.fnmatchcase(path, selector)
        )
    if inspect.isclass(selector):
        return isinstance(layer, selector)
    return bool(selector(layer))


def select(
    model: keras.layers.Layer, selector: LayerSelector
) -> list[tuple[str, keras.layers.Layer]]:
    """The layers of `model` chosen by `selector`.

    A layer is chosen when the selector matches it or any layer enclosing it.

    Args:
        model: a `keras.Model` or `keras.layers.Layer`.
        selector: see the module docstring.

    Returns:
        A list of `(path, layer)` pairs in `walk` order; empty when nothing
        matches.
    """
    _check_model(model)
    _check_selector(selector)
    return [
        (path, layer)
        for path, layer, ancestors in _walk_with_ancestors(model)
        if matches(selector, path, layer)
        or any(matches(selector, p, a) for p, a in ancestors)
    ]


def _first_match(selectors, model):
    """Pairs each layer of `model` with the first selector that picks it.

    Args:
        selectors: an ordered sequence of selectors.
        model: a `keras.Model` or `keras.layers.Layer`.

    Returns:
        A list of `(path, layer, index)` in `walk` order, `index` being the
        position of the first selector that picks the layer (or an enclosing
        layer); layers no selector picks are left out.
    """
    chosen = []
    for path, layer, ancestors in _walk_with_ancestors(model):
        lineage = ancestors + ((path, layer),)
        for index, selector in enumerate(selectors):
            if any(matches(selector, p, a) for p, a in lineage):
                chosen.append((path, layer, index))
                break
    return chosen
