"""Magnitude masks: which entries of a set of kernels to prune, and how.

A mask keeps (1) or prunes (0) each entry of a kernel. The entries are
pruned in *groups* chosen by a structure, and the groups of smallest
magnitude go first:

- `None`: every entry is its own group, scored by `|w|` (unstructured).
- `"units"`: an output unit (a Dense column, a convolution filter, a
  depthwise channel) is a group, scored by the root mean square of its
  weights; its bias entry is pruned with it, so that the unit's output is
  exactly 0 and `keras_regkit.compact` can remove it.
- `(block_rows, block_cols)`: blocks of the kernel seen as a matrix
  (`(prod(shape[:-1]), shape[-1])`, inputs by outputs), scored by their
  mean `|w|` (TF-MOT's "AVG" block pooling); blocks cut by the matrix's
  edge are scored on the entries they hold.
- `"N:M"`, e.g. `"2:4"`: in every `M` consecutive inputs of each output
  (the reduction axis, as sparse tensor cores read it), the `M - N`
  smallest are pruned, a sparsity of exactly `(M - N) / M`.

Sparsity counts entries. Per kernel (`scope="layer"`) the number of
groups pruned is `round(sparsity * groups)`, so unstructured masks are
exact to one weight; over all kernels at once (`scope="global"`), groups
are ranked together and taken smallest first until the pruned entries
are closest to `round(sparsity * entries)`.

Entries pruned before score 0 and are pruned again first: as long as the
sparsity does not decrease, a mask only grows.
"""

import dataclasses
import math
import re
from typing import TypeAlias

import keras
import numpy as np

from keras_regkit import _attach

STRUCTURES = ("None", '"units"', "(block_rows, block_cols)", '"N:M"')
# A `structure` argument: None, "units", "N:M" or (block_rows, block_cols).
Structure: TypeAlias = str | tuple[int, int] | list[int] | None
_N_OF_M = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def check_structure(structure):
    """Checks a `structure` argument; returns it in a canonical form.

    Returns:
        `None`, `"units"`, `("blocks", rows, cols)` or `("n:m", n, m)`.
    """
    if structure is None or structure == "units":
        return structure
    expected = "one of " + ", ".join(STRUCTURES)
    message = (
        f"Invalid value received for argument `structure`. Expected "
        f"{expected}. Received: structure={structure!r}"
    )
    if isinstance(structure, str):
        match = _N_OF_M.match(structure)
        if not match:
            raise ValueError(message)
        n, m = int(match.group(1)), int(match.group(2))
        if not 0 < n < m:
            raise ValueError(f"{message} (N:M needs 0 < N < M)")
        return ("n:m", n, m)
    if isinstance(structure, (tuple, list)) and len(structure) == 2:
        if all(
            isinstance(side, (int, np.integer))
            and not isinstance(side, bool)
            and side >= 1
            for side in structure
        ):
            rows, cols = (int(side) for side in structure)
            if rows * cols > 1:
                return ("blocks", rows, cols)
            raise ValueError(f"{message} (a 1x1 block is structure=None)")
    if isinstance(structure, (tuple, list, str)):
        raise ValueError(message)
    raise TypeError(message)


# Layers whose output units `"units"` can prune, with the number of
# trailing kernel axes that index a unit.
_UNIT_LAYERS = (
    (keras.layers.Dense, 1),
    (keras.layers.Conv1D, 1),
    (keras.layers.Conv2D, 1),
    (keras.layers.Conv3D, 1),
    (keras.layers.DepthwiseConv1D, 2),
    (keras.layers.DepthwiseConv2D, 2),
)


@dataclasses.dataclass
class Target:
    """A kernel to prune, and the bias pruned with its units (`"units"`).

    Attributes:
        name: the layer path and the weight name (`"dense/kernel"`).
        kernel: the kernel variable.
        unit_axes: how many trailing kernel axes index a unit.
        bias: the layer's bias, for `"units"` (`None` otherwise, or when
            the layer has no trainable bias).
    """

    name: str
    kernel: keras.Variable
    unit_axes: int = 1
    bias: keras.Variable | None = None


def targets(model, layers, structure):
    """The kernels the selector `layers` chooses, as `Target`s.

    Every kind of kernel `regularize` reaches; for `"units"`, each with
    its layer's bias.

    Raises:
        ValueError: when `layers` matches nothing; for `"units"`, when a
            chosen kernel is not one of a Dense, convolution or depthwise
            convolution layer (naming it); for `N:M`, when a kernel's
            inputs are not a multiple of `M`.
    """
    found = []
    for path, layer, _, kernel in _attach.selected_layer_weights(model, layers):
        target = Target(f"{path}/{kernel.name}", kernel)
        if structure == "units":
            target.unit_axes = _unit_axes(path, layer)
            bias = getattr(layer, "bias", None)
            if isinstance(bias, keras.Variable) and bias.trainable:
                target.bias = bias
        check_fits(structure, kernel.shape, repr(target.name))
        found.append(target)
    return found


def _unit_axes(path, layer):
    for kind, axes in _UNIT_LAYERS:
        if isinstance(layer, kind):
            return axes
    supported = ", ".join(kind.__name__ for kind, _ in _UNIT_LAYERS)
    raise ValueError(
        f"structure='units' prunes the output units of {supported} "
        f"layers, but the layers chosen include {path!r} "
        f"({type(layer).__name__}). Choose the layers to prune with "
        "`layers`."
    )


def fixed_sparsity(structure):
    """The sparsity an `N:M` structure imposes, or `None` for the others."""
    if isinstance(structure, tuple) and structure[0] == "n:m":
        _, n, m = structure
        return (m - n) / m
    return None


def as_matrix(kernel, unit_axes=1):
    """`kernel` as a matrix: inputs by outputs (the last `unit_axes` axes)."""
    outputs = math.prod(kernel.shape[len(kernel.shape) - unit_axes :])
    return kernel.reshape(-1, outputs)


def check_fits(structure, shape, where):
    """Refuses a kernel shape the structure cannot divide.

    Raises:
        ValueError: for `N:M` when the inputs (all axes but the last) are
            not a multiple of `M`, naming `where` and the shape.
    """
    if isinstance(structure, tuple) and structure[0] == "n:m":
        _, n, m = structure
        inputs = math.prod(shape[:-1])
        if inputs % m:
            raise ValueError(
                f"structure='{n}:{m}' needs the inputs of each kernel to "
                f"be a multiple of {m}, but {where} has shape {tuple(shape)}"
                f" ({inputs} inputs per output). Leave it out with `layers`."
            )


def masks(kernels, sparsity, structure=None, scope="layer", unit_axes=None):
    """The magnitude masks of `kernels` at `sparsity`, as float arrays.

    Args:
        kernels: numpy arrays, the kernels' current values.
        sparsity: float in [0, 1), the fraction of entries to prune
            (ignored for `N:M`, whose sparsity is fixed).
        structure: a canonical structure, from `check_structure`.
        scope: `"layer"` (each kernel to `sparsity`) or `"global"` (all
            kernels together).
        unit_axes: for `"units"`, how many trailing axes of each kernel
            index its output units (1 for Dense and Conv, 2 for depthwise
            kernels); 1 for every kernel when None.

    Returns:
        A list of arrays shaped and typed like `kernels`, 1.0 where an entry
        is kept and 0.0 where it is pruned.
    """
    if unit_axes is None:
        unit_axes = [1] * len(kernels)
    if isinstance(structure, tuple) and structure[0] == "n:m":
        return [_n_of_m_mask(kernel, *structure[1:]) for kernel in kernels]
    scored = [
        _group_scores(kernel, structure, axes)
        for kernel, axes in zip(kernels, unit_axes, strict=True)
    ]
    if scope == "global":
        pruned = _prune_globally(scored, sparsity)
    else:
        pruned = [
            _smallest(scores, round(sparsity * scores.size))
            for scores, _, _ in scored
        ]
    return [
        expand(keep_groups, kernel, structure, axes)
        for keep_groups, kernel, axes in zip(
            (~p for p in pruned), kernels, unit_axes, strict=True
        )
    ]


def unit_mask(mask, unit_axes=1):
    """Which output units a `"units"` mask keeps, as a flat float array."""
    return as_matrix(mask, unit_axes)[0].copy()


def _group_scores(kernel, structure, unit_axes):
    """`(scores, sizes, count)`: each group's magnitude and entry count."""
    magnitude = np.abs(kernel.astype("float64"))
    if structure is None:
        scores = magnitude.ravel()
        return scores, np.ones(scores.size), scores.size
    if structure == "units":
        matrix = as_matrix(magnitude, unit_axes)
        scores = np.sqrt(np.mean(matrix**2, axis=0))
        return scores, np.full(scores.size, matrix.shape[0]), scores.size
    _, rows, cols = structure
    sums, sizes = _block_sums(as_matrix(magnitude), rows, cols)
    return (sums / sizes).ravel(), sizes.ravel(), sums.size


def _block_sums(matrix, rows, cols):
    """Sums and entry counts of the `rows` x `cols` blocks of `matrix`."""
    height, width = matrix.shape
    padded = np.zeros((-(-height // rows) * rows, -(-width // cols) * cols))
    padded[:height, :width] = matrix
    present = np.zeros_like(padded)
    present[:height, :width] = 1.0

    def blocks(values):
        shaped = values.reshape(
            padded.shape[0] // rows, rows, padded.shape[1] // cols, cols
        )
        return shaped.sum(axis=(1, 3))

    return blocks(padded), blocks(present)


def _smallest(scores, count):
    """A bool array marking the `count` smallest `scores` (ties: any)."""
    chosen = np.zeros(scores.size, dtype=bool)
    if count > 0:
        chosen[np.argpartition(scores, count - 1)[:count]] = True
    return chosen


def _prune_globally(scored, sparsity):
    """Marks the groups to prune when all kernels are ranked together."""
    scores = np.concatenate([s for s, _, _ in scored])
    sizes = np.concatenate([z for _, z, _ in scored])
    target = round(sparsity * sizes.sum())
    order = np.argsort(scores, kind="stable")
    pruned_entries = np.concatenate([[0.0], np.cumsum(sizes[order])])
    # the prefix of groups whose entry count is closest to the target
    count = int(np.argmin(np.abs(pruned_entries - target)))
    chosen = np.zeros(scores.size, dtype=bool)
    chosen[order[:count]] = True
    bounds = np.cumsum([0] + [n for _, _, n in scored])
    return [chosen[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def expand(keep_groups, kernel, structure, unit_axes=1):
    """A kernel-shaped float mask from one keep flag per group."""
    keep = keep_groups.astype(kernel.dtype)
    if structure is None:
        return keep.reshape(kernel.shape)
    matrix_shape = as_matrix(kernel, unit_axes).shape
    if structure == "units":
        return np.broadcast_to(keep, matrix_shape).reshape(kernel.shape).copy()
    _, rows, cols = structure
    height, width = matrix_shape
    block_rows, block_cols = -(-height // rows), -(-width // cols)
    full = np.repeat(
        np.repeat(keep.reshape(block_rows, block_cols), rows, axis=0),
        cols,
        axis=1,
    )
    return full[:height, :width].reshape(kernel.shape).copy()


def _n_of_m_mask(kernel, n, m):
    """Keeps the `n` largest of every `m` consecutive inputs per output."""
    matrix = np.abs(as_matrix(kernel))
    height, width = matrix.shape
    grouped = matrix.reshape(height // m, m, width)
    ranks = np.argsort(np.argsort(-grouped, axis=1, kind="stable"), axis=1)
    keep = (ranks < n).astype(kernel.dtype)
    return keep.reshape(kernel.shape)
