"""Tests for callbacks.GradualPruning: masks held in the compiled step."""

import keras
import numpy as np
import pytest

from keras_regkit import L1
from keras_regkit.callbacks import GradualPruning, ProximalStep
from keras_regkit.pruning import ConstantSparsity, PolynomialDecay

_RNG = np.random.default_rng(0)
X = _RNG.normal(size=(64, 8)).astype("float32")
Y = (X[:, :3].sum(axis=1, keepdims=True)).astype("float32")
BATCH = 8  # 8 steps per epoch
SCHEDULE = PolynomialDecay(0.2, 0.8, begin_step=0, end_step=20, frequency=4)


def _mlp(optimizer="adam", constraint=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(
                16,
                activation="relu",
                kernel_constraint=constraint,
                name="hidden",
            ),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile(optimizer, "mse")
    return model


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _kernel(model, name="hidden"):
    return _numpy(model.get_layer(name).kernel)


class _Record(keras.callbacks.Callback):
    """Each kernel's values after every step, with the step's number."""

    def __init__(self, names=("hidden", "head")):
        super().__init__()
        self.names = names
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        model = self.model  # syncs JAX's state to the variables
        step = int(_numpy(model.optimizer.iterations)) - 1
        self.steps.append((step, {n: _kernel(model, n) for n in self.names}))


def _weights_by_name(model):
    return {
        f"{layer.name}/{weight.name}": _numpy(weight)
        for layer in model.layers
        for weight in layer.weights
    }


def _fit(model, callbacks, epochs=4, **kwargs):
    return model.fit(
        X,
        Y,
        batch_size=BATCH,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
        **kwargs,
    )


def _last_pruning_step(schedule, step):
    steps = range(schedule.begin_step, step + 1)
    due = [s for s in steps if schedule.should_prune(s)]
    return due[-1] if due else None


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.SGD(0.05, momentum=0.9),
        lambda: keras.optimizers.Adam(0.01),
        lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
    ],
    ids=["sgd-momentum", "adam", "adamw"],
)
def test_each_kernel_is_exactly_as_sparse_as_the_schedule_after_every_step(
    optimizer,
):
    model = _mlp(optimizer())
    record = _Record()
    history = _fit(model, [GradualPruning(SCHEDULE), record])
    zero_sets = {}
    for step, kernels in record.steps:
        sparsity = SCHEDULE.sparsity(_last_pruning_step(SCHEDULE, step))
        for name, kernel in kernels.items():
            zeros = kernel == 0.0
            assert zeros.sum() == round(sparsity * kernel.size), (name, step)
            # Pruned entries stay exactly 0.0 through every update.
            previous = zero_sets.get(name, np.zeros_like(zeros))
            assert np.all(zeros[previous]), (name, step)
            zero_sets[name] = zeros
    final = SCHEDULE.sparsity(SCHEDULE.end_step)
    total = 8 * 16 + 16
    expected = (round(final * 128) + round(final * 16)) / total
    assert history.history["sparsity"][-1] == pytest.approx(expected)


def _prune_once(structure=None, scope="layer", layers=None, model=None):
    """One step of fit that prunes to 50% at step 0: the masks come from
    the initial weights, which are returned."""
    model = model or _mlp(keras.optimizers.SGD(0.01))
    before = _weights_by_name(model)
    pruning = GradualPruning(
        ConstantSparsity(0.5, begin_step=0, end_step=0),
        layers=layers,
        scope=scope,
        structure=structure,
    )
    model.fit(
        X[:8], Y[:8], batch_size=8, epochs=1, verbose=0, callbacks=[pruning]
    )
    return model, before


def test_layer_scope_prunes_the_smallest_magnitudes_of_each_kernel():
    model, before = _prune_once()
    for name in ("hidden", "head"):
        initial = np.abs(before[f"{name}/kernel"]).ravel()
        pruned = (_kernel(model, name) == 0.0).ravel()
        smallest = np.argsort(initial)[: round(0.5 * initial.size)]
        assert set(np.flatnonzero(pruned)) == set(smallest)


def test_global_scope_ranks_all_kernels_together():
    model, before = _prune_once(scope="global")
    initial = np.concatenate(
        [np.abs(before[f"{n}/kernel"]).ravel() for n in ("hidden", "head")]
    )
    pruned = np.concatenate(
        [(_kernel(model, n) == 0.0).ravel() for n in ("hidden", "head")]
    )
    assert pruned.sum() == round(0.5 * initial.size)
    smallest = np.argsort(initial)[: round(0.5 * initial.size)]
    assert set(np.flatnonzero(pruned)) == set(smallest)


def test_units_prunes_whole_units_and_their_biases():
    model = _mlp(keras.optimizers.SGD(0.01))
    model.get_layer("hidden").bias.assign(np.full(16, 0.1, "float32"))
    model, before = _prune_once("units", layers="hidden", model=model)
    initial = before["hidden/kernel"]
    rms = np.sqrt((initial**2).mean(axis=0))
    expected = set(np.argsort(rms)[:8])
    kernel = _kernel(model)
    bias = _numpy(model.get_layer("hidden").bias)
    dead = {j for j in range(16) if np.all(kernel[:, j] == 0.0)}
    assert dead == expected
    assert {j for j in range(16) if bias[j] == 0.0} == expected
    # the other units were trained, not pruned
    assert np.all(kernel[:, sorted(set(range(16)) - expected)] != 0.0)


def test_units_of_convolutions_and_depthwise_convolutions():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 4)),
            keras.layers.Conv2D(6, 3, name="conv"),
            keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="depth"),
            keras.layers.Flatten(),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile(keras.optimizers.SGD(0.01), "mse")
    x = _RNG.normal(size=(8, 6, 6, 4)).astype("float32")
    y = _RNG.normal(size=(8, 1)).astype("float32")
    before = _weights_by_name(model)
    pruning = GradualPruning(
        ConstantSparsity(0.5, begin_step=0, end_step=0),
        layers=["conv", "depth"],
        structure="units",
    )
    model.fit(x, y, epochs=1, verbose=0, callbacks=[pruning])
    conv = _numpy(model.get_layer("conv").kernel)  # (3, 3, 4, 6)
    rms = np.sqrt((before["conv/kernel"] ** 2).mean(axis=(0, 1, 2)))
    dead = {j for j in range(6) if np.all(conv[..., j] == 0.0)}
    assert dead == set(np.argsort(rms)[:3])
    depth = _numpy(model.get_layer("depth").kernel)  # (3, 3, 6, 2)
    channels = depth.reshape(9, 12)  # output channel c * 2 + m
    dead = {j for j in range(12) if np.all(channels[:, j] == 0.0)}
    assert len(dead) == 6
    bias = _numpy(model.get_layer("depth").bias)
    assert all(bias[j] == 0.0 for j in dead)


def _block_reference(kernel, rows, cols, sparsity):
    """numpy: which (rows x cols) blocks of |kernel| have the least mean."""
    height, width = kernel.shape
    means = {}
    for i in range(0, height, rows):
        for j in range(0, width, cols):
            means[(i, j)] = np.abs(kernel[i : i + rows, j : j + cols]).mean()
    order = sorted(means, key=means.get)
    return set(order[: round(sparsity * len(order))])


def test_blocks_are_pruned_whole_by_mean_magnitude():
    model, before = _prune_once((2, 4))
    for name in ("hidden", "head"):
        initial = before[f"{name}/kernel"]
        kernel = _kernel(model, name)
        expected = _block_reference(initial, 2, 4, 0.5)
        for i in range(0, kernel.shape[0], 2):
            for j in range(0, kernel.shape[1], 4):
                block = kernel[i : i + 2, j : j + 4]
                if (i, j) in expected:
                    assert np.all(block == 0.0), (name, i, j)
                else:
                    assert np.all(block != 0.0), (name, i, j)


def test_two_of_four_keeps_the_two_largest_of_every_four_inputs():
    model, before = _prune_once("2:4")
    for name in ("hidden", "head"):
        initial = np.abs(before[f"{name}/kernel"])
        kernel = _kernel(model, name)
        for j in range(kernel.shape[1]):
            for i in range(0, kernel.shape[0], 4):
                kept = set(np.flatnonzero(kernel[i : i + 4, j] != 0.0))
                assert kept == set(np.argsort(-initial[i : i + 4, j])[:2])


def test_a_model_pruned_across_fits_equals_one_pruned_in_one_fit():
    reference = _mlp()
    one = _fit(reference, [GradualPruning(SCHEDULE)], epochs=4)
    for fresh_callback in (False, True):
        model = _mlp()
        pruning = GradualPruning(SCHEDULE)
        first = _fit(model, [pruning], epochs=2)
        if fresh_callback:  # e.g. a model loaded from a checkpoint
            pruning = GradualPruning(SCHEDULE)
        second = _fit(model, [pruning], epochs=4, initial_epoch=2)
        logged = first.history["sparsity"] + second.history["sparsity"]
        assert logged == pytest.approx(one.history["sparsity"])
        for ours, theirs in zip(
            model.get_weights(), reference.get_weights(), strict=True
        ):
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_the_pruned_model_is_a_plain_keras_model(tmp_path):
    max_norm = keras.constraints.MaxNorm(3.0)
    model = _mlp(constraint=max_norm)
    layer_types = [type(layer) for layer in model.layers]
    _fit(model, [GradualPruning(SCHEDULE)])
    assert [type(layer) for layer in model.layers] == layer_types
    assert model.get_layer("hidden").kernel.constraint is max_norm
    assert model.get_layer("head").kernel.constraint is None
    assert GradualPruning.release(model) == 0
    path = tmp_path / "pruned.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(_kernel(loaded), _kernel(model))
    assert (_kernel(loaded) == 0.0).mean() == pytest.approx(0.8, abs=0.01)
    np.testing.assert_allclose(
        loaded.predict(X, verbose=0), model.predict(X, verbose=0), rtol=1e-6
    )


def test_masks_are_held_inside_proximal_steps_and_released_in_any_order():
    model = _mlp(keras.optimizers.SGD(0.05))
    model.get_layer("hidden").kernel.regularizer = L1(1e-3)
    record = _Record(("hidden",))
    _fit(model, [ProximalStep(), GradualPruning(SCHEDULE), record])
    final = SCHEDULE.sparsity(SCHEDULE.end_step)
    for step, kernels in record.steps:
        sparsity = SCHEDULE.sparsity(_last_pruning_step(SCHEDULE, step))
        # the prox may add zeros; the pruned ones never come back
        assert (kernels["hidden"] == 0.0).sum() >= round(sparsity * 128)
    assert (_kernel(model) == 0.0).sum() >= round(final * 128)
    kernel = model.get_layer("hidden").kernel
    assert kernel.constraint is None
    assert kernel.regularizer == L1(1e-3)


@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="PyTorch's trainer has no steps_per_execution",
)
def test_steps_per_execution_prunes_at_the_next_block():
    keras.utils.set_random_seed(0)
    model = _mlp()
    model.compile("adam", "mse", steps_per_execution=2)
    schedule = ConstantSparsity(0.6, begin_step=3, frequency=100)
    history = _fit(model, [GradualPruning(schedule, layers="hidden")])
    assert (_kernel(model) == 0.0).sum() == round(0.6 * 128)
    assert history.history["sparsity"][-1] == pytest.approx(
        round(0.6 * 128) / 128
    )


@pytest.mark.parametrize(
    "schedule, changes",
    [
        # steps 0, 4, ..., 16 prune more; 20 prunes as many as 16 did
        (SCHEDULE, 5),
        (ConstantSparsity(0.5, begin_step=0, frequency=4), 1),
    ],
    ids=["polynomial", "constant"],
)
def test_train_step_is_traced_again_only_where_it_must(schedule, changes):
    model = _mlp()
    built = []
    make_train_function = model.make_train_function

    def counted(force=False):
        built.append(force)
        return make_train_function(force=force)

    model.make_train_function = counted
    _fit(model, [GradualPruning(schedule)])
    # when fit begins (the masks go on) and ends (they come off); on JAX,
    # whose compiled step holds the masks as constants, once more per
    # pruning step that changes them
    jax = keras.backend.backend() == "jax"
    assert built.count(True) == 2 + (changes if jax else 0)


def test_verbose_prints_each_pruning_step(capsys):
    schedule = ConstantSparsity(0.5, begin_step=0, end_step=8, frequency=8)
    _fit(_mlp(), [GradualPruning(schedule, verbose=1)], epochs=2)
    printed = capsys.readouterr().out
    assert "Step 0: GradualPruning pruned to sparsity 0.5000" in printed
    assert "Step 8: GradualPruning" in printed


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ({"schedule": 0.5}, TypeError, "argument `schedule`.*0.5"),
        ({"scope": "local"}, ValueError, "argument `scope`.*scope='local'"),
        ({"structure": "rows"}, ValueError, "structure='rows'"),
        ({"structure": "4:4"}, ValueError, "0 < N < M"),
        ({"structure": (0, 2)}, ValueError, r"structure=\(0, 2\)"),
        ({"structure": (1, 1)}, ValueError, "1x1 block"),
        ({"structure": 4}, TypeError, "structure=4"),
        ({"verbose": 2}, ValueError, "argument `verbose`.*verbose=2"),
        ({"layers": 3}, TypeError, "layers"),
        ({"structure": "2:4"}, ValueError, "fixed sparsity 0.5.*0.8"),
    ],
)
def test_bad_arguments_are_refused_by_name(arguments, error, message):
    arguments = {"schedule": SCHEDULE, **arguments}
    with pytest.raises(error, match=message):
        GradualPruning(**arguments)


def test_two_of_four_accepts_a_constant_half():
    pruning = GradualPruning(ConstantSparsity(0.5, 0), structure="2:4")
    assert pruning.get_config()["structure"] == "2:4"


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"layers": "nothing*"}, "matches no layer"),
        (
            {"structure": "units", "layers": "lstm"},
            "'lstm/lstm_cell' \\(LSTMCell\\).*`layers`",
        ),
        (
            {
                "structure": "2:4",
                "schedule": ConstantSparsity(0.5, 0),
                "layers": "odd",
            },
            "multiple of 4.*'odd/kernel'.*\\(6, 3\\)",
        ),
    ],
)
def test_layers_it_cannot_prune_are_refused_when_fit_begins(arguments, message):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((5, 6)),
            keras.layers.LSTM(4, return_sequences=True, name="lstm"),
            keras.layers.Dense(6, name="wide"),
            keras.layers.Dense(3, name="odd"),
        ]
    )
    model.compile("adam", "mse")
    x = _RNG.normal(size=(4, 5, 6)).astype("float32")
    y = _RNG.normal(size=(4, 5, 3)).astype("float32")
    pruning = GradualPruning(**{"schedule": SCHEDULE, **arguments})
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[pruning])
