"""Tests for keras_regkit._masks: magnitude masks, against numpy loops."""

import numpy as np
import pytest

from keras_regkit import _masks

# Arguments and numpy: nothing here depends on the Keras backend.
pytestmark = pytest.mark.backend_independent

_RNG = np.random.default_rng(0)


def _kernel(*shape):
    return _RNG.normal(size=shape).astype("float32")


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.77, 0.95])
def test_unstructured_masks_prune_the_smallest_entries_of_each_kernel(
    sparsity,
):
    kernels = [_kernel(7, 5), _kernel(3, 3, 2, 4)]
    for kernel, mask in zip(
        kernels, _masks.masks(kernels, sparsity), strict=True
    ):
        assert mask.shape == kernel.shape and mask.dtype == kernel.dtype
        count = round(sparsity * kernel.size)
        expected = np.ones(kernel.size)
        expected[np.argsort(np.abs(kernel).ravel())[:count]] = 0.0
        np.testing.assert_array_equal(mask.ravel(), expected)


def test_global_masks_rank_every_entry_together():
    kernels = [_kernel(10, 4), 0.1 * _kernel(6, 2)]  # the second is small
    masks = _masks.masks(kernels, 0.5, scope="global")
    flat = np.concatenate([np.abs(k).ravel() for k in kernels])
    expected = np.ones(flat.size)
    expected[np.argsort(flat)[: round(0.5 * flat.size)]] = 0.0
    np.testing.assert_array_equal(
        np.concatenate([m.ravel() for m in masks]), expected
    )
    assert masks[1].mean() < masks[0].mean()


@pytest.mark.parametrize(
    "unit_axes, shape", [(1, (3, 3, 2, 6)), (2, (3, 3, 3, 2))]
)
def test_unit_masks_prune_whole_units_by_rms(unit_axes, shape):
    kernel = _kernel(*shape)
    (mask,) = _masks.masks([kernel], 0.5, "units", unit_axes=[unit_axes])
    units = kernel.reshape(-1, 6)  # six units either way
    rms = np.sqrt((units**2).mean(axis=0))
    keep = np.ones(6)
    keep[np.argsort(rms)[:3]] = 0.0
    np.testing.assert_array_equal(
        mask.reshape(-1, 6), np.tile(keep, (units.shape[0], 1))
    )
    np.testing.assert_array_equal(_masks.unit_mask(mask, unit_axes), keep)


def test_blocks_at_the_edge_are_scored_on_the_entries_they_hold():
    kernel = _kernel(5, 6)  # (2, 4) blocks: 3 x 2, the last row and column cut
    (mask,) = _masks.masks([kernel], 0.5, ("blocks", 2, 4))
    means = {}
    for i in range(0, 5, 2):
        for j in range(0, 6, 4):
            means[(i, j)] = np.abs(kernel[i : i + 2, j : j + 4]).mean()
    pruned = set(sorted(means, key=means.get)[:3])
    for i, j in means:
        block = mask[i : i + 2, j : j + 4]
        assert np.all(block == (0.0 if (i, j) in pruned else 1.0))


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (3, 8)])
def test_n_of_m_keeps_the_n_largest_of_every_m_inputs(n, m):
    kernel = _kernel(2, 2, m, 3)  # 4 * m inputs per output
    (mask,) = _masks.masks([kernel], None, ("n:m", n, m))
    matrix, kept = np.abs(kernel.reshape(-1, 3)), mask.reshape(-1, 3)
    for j in range(3):
        for i in range(0, matrix.shape[0], m):
            expected = np.zeros(m)
            expected[np.argsort(-matrix[i : i + m, j])[:n]] = 1.0
            np.testing.assert_array_equal(kept[i : i + m, j], expected)
    assert mask.mean() == pytest.approx(n / m)
    assert _masks.fixed_sparsity(("n:m", n, m)) == pytest.approx((m - n) / m)


def test_global_units_take_the_prefix_closest_to_the_target():
    # units of 8 entries (first kernel) and of 2 entries (second)
    kernels = [_kernel(8, 4), _kernel(2, 6)]
    masks = _masks.masks(kernels, 0.4, "units", "global", [1, 1])
    entries = 8 * 4 + 2 * 6
    pruned = sum(int((m == 0).sum()) for m in masks)
    sizes = [8] * 4 + [2] * 6
    rms = np.concatenate([np.sqrt((k**2).mean(axis=0)) for k in kernels])
    totals = np.concatenate([[0], np.cumsum(np.array(sizes)[np.argsort(rms)])])
    target = round(0.4 * entries)
    assert pruned == totals[np.argmin(np.abs(totals - target))]


def test_entries_pruned_before_stay_pruned_as_the_sparsity_grows():
    kernel = _kernel(20, 10)
    previous = np.ones_like(kernel)
    for sparsity in (0.2, 0.5, 0.8):
        kernel = kernel * previous
        (mask,) = _masks.masks([kernel], sparsity)
        assert np.all(mask[previous == 0.0] == 0.0)
        previous = mask


@pytest.mark.parametrize(
    "given, canonical",
    [
        (None, None),
        ("units", "units"),
        ((2, 4), ("blocks", 2, 4)),
        ([1, 4], ("blocks", 1, 4)),
        ("2:4", ("n:m", 2, 4)),
        (" 1 : 8 ", ("n:m", 1, 8)),
    ],
)
def test_structures_in_canonical_form(given, canonical):
    assert _masks.check_structure(given) == canonical


@pytest.mark.parametrize(
    "given, error, message",
    [
        ("unit", ValueError, "structure='unit'"),
        ("4:2", ValueError, "0 < N < M"),
        ("0:4", ValueError, "0 < N < M"),
        ((2, 0), ValueError, r"structure=\(2, 0\)"),
        ((2, 2, 2), ValueError, r"structure=\(2, 2, 2\)"),
        ((True, 2), ValueError, r"structure=\(True, 2\)"),
        ((1, 1), ValueError, "1x1 block"),
        (2.5, TypeError, "structure=2.5"),
    ],
)
def test_bad_structures_are_refused_by_name(given, error, message):
    with pytest.raises(error, match=message):
        _masks.check_structure(given)


def test_n_of_m_refuses_inputs_that_are_not_a_multiple_of_m():
    with pytest.raises(
        ValueError, match="multiple of 4.*'k'.*\\(3, 3, 3, 8\\)"
    ):
        _masks.check_fits(("n:m", 2, 4), (3, 3, 3, 8), "'k'")
    _masks.check_fits(("n:m", 2, 4), (3, 3, 4, 8), "'k'")  # 36 inputs
