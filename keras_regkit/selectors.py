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
wrapper) also selects everything inside it. A layer shared by several
parents (one layer used by two sub-models) is reachable by each of its
paths: a selector that matches any of them, or any layer enclosing it on
any of them, selects it. `walk` lists it once, under its first path, and
so does `select`.

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


def _paths(root):
    """Yields `(path, layer, ancestors)` for each path to each layer.

    `ancestors` holds the `(path, layer)` of the layers enclosing it on that
    path, outermost first. A layer shared by several parents is yielded
    once per path, and so are the layers inside it. Input layers are left
    out, and so is a layer found inside itself (a reference back to an
    enclosing layer).
    """

    def visit(layer, prefix, ancestors, enclosing):
        children = {id(child): child for child in sublayers(layer)}
        for child in children.values():
            if id(child) in enclosing or isinstance(
                child, keras.layers.InputLayer
            ):
                continue
            path = f"{prefix}{child.name}"
            yield path, child, ancestors
            yield from visit(
                child,
                path + "/",
                ancestors + ((path, child),),
                enclosing | {id(child)},
            )

    if not isinstance(root, keras.Model):
        yield root.name, root, ()
        yield from visit(
            root, root.name + "/", ((root.name, root),), {id(root)}
        )
    else:
        yield from visit(root, "", (), {id(root)})


def _layers_with_paths(root):
    """Each layer inside `root` once, in `walk` order, with all its paths.

    Returns:
        A list of `(layer, occurrences)`, `occurrences` being the
        `(path, ancestors)` of each path to the layer, the first one first.
    """
    found: dict[int, tuple[keras.layers.Layer, list]] = {}
    for path, layer, ancestors in _paths(root):
        found.setdefault(id(layer), (layer, []))[1].append((path, ancestors))
    return list(found.values())


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
    return [
        (occurrences[0][0], layer)
        for layer, occurrences in _layers_with_paths(model)
    ]


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

    A layer is chosen when the selector matches it or any layer enclosing
    it, on any of the paths that reach it (a shared layer has several).

    Args:
        model: a `keras.Model` or `keras.layers.Layer`.
        selector: see the module docstring.

    Returns:
        A list of `(path, layer)` pairs in `walk` order, each layer once
        under its `walk` path; empty when nothing matches.
    """
    _check_model(model)
    _check_selector(selector)
    return [
        (occurrences[0][0], layer)
        for layer, occurrences in _layers_with_paths(model)
        if any(
            _picks(selector, lineage)
            for lineage in _lineages(layer, occurrences)
        )
    ]


def _lineages(layer, occurrences):
    """For each path to `layer`: the `(path, layer)` pairs from the root."""
    return [ancestors + ((path, layer),) for path, ancestors in occurrences]


def _picks(selector, lineage):
    """Whether `selector` matches a layer of `lineage` (a path's layers).

    The layer itself is tried first, then the layers around it, innermost
    first.
    """
    return any(
        matches(selector, path, layer) for path, layer in reversed(lineage)
    )


def _first_match(selectors, model):
    """Pairs each layer of `model` with the first selector that picks it.

    Args:
        selectors: an ordered sequence of selectors.
        model: a `keras.Model` or `keras.layers.Layer`.

    Returns:
        A list of `(path, layer, index)` in `walk` order, `path` being the
        layer's `walk` path and `index` the position of the first selector
        that picks the layer (or an enclosing layer) on any of its paths;
        layers no selector picks are left out.
    """
    chosen = []
    for layer, occurrences in _layers_with_paths(model):
        lineages = _lineages(layer, occurrences)
        for index, selector in enumerate(selectors):
            if any(_picks(selector, lineage) for lineage in lineages):
                chosen.append((occurrences[0][0], layer, index))
                break
    return chosen
