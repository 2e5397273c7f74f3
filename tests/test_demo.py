"""Tests for the overfitting lab, `keras-regkit demo`."""

import os
import pathlib
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from matplotlib.image import imread

from keras_regkit import L2
from keras_regkit import _demo as demo
from keras_regkit._shrinkage_report import ShrinkageReport, ShrinkageRow

FIGURES = (
    "learning_curves.png",
    "decision_boundaries.png",
    "weight_histograms.png",
    "strength_sweep.png",
    "shrinkage_path.png",
)


def _score(test_accuracy):
    return demo.Score(
        train_accuracy=1.0,
        test_accuracy=test_accuracy,
        test_loss=0.3,
        kernel_norm=2.0,
        zero_fraction=0.0,
    )


def _result(label, test_accuracies, held_out=None, baseline=False):
    held_out = held_out or [None] * len(test_accuracies)
    runs = tuple(
        demo.SeedRun(
            score=_score(accuracy),
            steps=2000,
            seconds=1.0,
            held_out=None if other is None else _score(other),
        )
        for accuracy, other in zip(test_accuracies, held_out, strict=True)
    )
    return demo.MethodResult(label, runs, baseline=baseline)


def test_the_table_says_honestly_whether_a_method_helps():
    table = demo.format_table(
        [
            _result("none", [0.90, 0.92], baseline=True),
            _result("L2(1e-3)", [0.94, 0.94]),
            _result("L1(1e-4)", [0.91, 0.91]),
            _result("Dropout(0.4)", [0.85, 0.87]),
        ]
    ).splitlines()
    assert table[0].split()[:3] == ["method", "train", "acc"]
    rows = {line.split()[0]: line for line in table[2:]}
    assert rows["none"].endswith("baseline")
    assert "0.910 ± 0.010" in rows["none"]
    assert rows["L2(1e-3)"].endswith("helps") and "+0.030" in rows["L2(1e-3)"]
    assert rows["L1(1e-4)"].endswith("no gain here")
    assert rows["Dropout(0.4)"].endswith("hurts here")


def test_the_summary_averages_every_regularized_run_against_none():
    results = [
        _result("none", [0.90, 0.92], baseline=True),
        _result("L2(1e-3)", [0.94, 0.94]),
        _result("Dropout(0.4)", [0.85, 0.87]),
        _result("EarlyStopping", [0.93, 0.93], held_out=[0.70, 0.80]),
    ]
    # (0.94 + 0.86 + 0.93) / 3 against 0.91
    assert demo.average_accuracies(results) == pytest.approx((0.91, 0.91))
    results[2] = _result("Dropout(0.4)", [0.94, 0.96])
    assert demo.average_accuracies(results) == pytest.approx((0.94, 0.91))
    first, second = demo.format_summary(results).splitlines()
    assert first == (
        "Regularized runs on average: test accuracy 0.940, against 0.910 "
        "without (+0.030)."
    )
    assert second.startswith("EarlyStopping choose on 3 folds")
    assert second.endswith("they would score EarlyStopping 0.750.")


def test_the_sweep_lists_each_strength_and_the_best():
    sweep = (
        demo.SweepPoint(1e-2, 0.9, 0.80),
        demo.SweepPoint(1e-3, 1.0, 0.93),
        demo.SweepPoint(1e-4, 1.0, 0.90),
    )
    assert demo.format_sweep(sweep).splitlines() == [
        "L2 strength sweep (mean over seeds):",
        "  L2(0.01): train 0.900, test 0.800",
        "  L2(0.001): train 1.000, test 0.930",
        "  L2(0.0001): train 1.000, test 0.900",
        "  best test accuracy at L2(0.001)",
    ]


def test_each_method_is_described_once_with_one_baseline():
    labels = [method.label for method in demo.METHODS]
    assert len(set(labels)) == len(labels)
    assert [m.label for m in demo.METHODS if m.baseline] == ["none"]
    assert [m.boundary_title for m in demo.METHODS if m.boundary_title] == [
        "no regularization",
        "L2(1e-3)",
        "Dropout(0.4)",
    ]


def test_score_is_the_data_fit_and_shrink_to_scales_like_shrink():
    train, test = demo.load_data()
    model = demo.build_model(0, penalty=L2(1e-2))
    score = demo._score(model, train, test)
    # The loss Keras reports, less the penalty term.
    loss = model.evaluate(*test, verbose=0, return_dict=True)["loss"]
    penalty = sum(
        float(keras.ops.convert_to_numpy(value)) for value in model.losses
    )
    assert penalty > 0
    assert score.test_loss == pytest.approx(loss - penalty, abs=1e-5)
    kernels = [
        keras.ops.convert_to_numpy(model.get_layer(name).kernel)
        for name in ("hidden", "output")
    ]
    bias = keras.ops.convert_to_numpy(model.get_layer("hidden").bias)
    demo._shrink_to(model, 0.25)
    for name, kernel in zip(("hidden", "output"), kernels, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(model.get_layer(name).kernel),
            kernel / 1.25,
            rtol=1e-6,
        )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("hidden").bias), bias
    )


def test_folds_hold_out_each_training_point_once():
    x = np.arange(30, dtype="float32").reshape(15, 2)
    y = np.arange(15, dtype="float32")
    folds = list(demo._folds((x, y), seed=3))
    assert len(folds) == demo.FOLDS == 3
    held = np.concatenate([validation[1] for _, validation in folds])
    assert sorted(held) == list(y)
    for (fit_x, fit_y), (val_x, val_y) in folds:
        assert len(val_y) == 5 and len(fit_y) == 10
        assert set(fit_y).isdisjoint(val_y)
        np.testing.assert_array_equal(fit_x[:, 1], 2 * fit_y + 1)
        np.testing.assert_array_equal(val_x[:, 0], 2 * val_y)
    assert [v[1].tolist() for _, v in demo._folds((x, y), seed=3)] == [
        v[1].tolist() for _, v in folds
    ]
    assert [v[1].tolist() for _, v in demo._folds((x, y), seed=4)] != [
        v[1].tolist() for _, v in folds
    ]


def _path(metrics, mode="max", tolerance=0.0):
    levels = (None, 0.1, 1.0, 10.0)
    return ShrinkageReport(
        method="scale",
        monitor="accuracy" if mode == "max" else "loss",
        mode=mode,
        select="sparsest_within",
        tolerance=tolerance,
        chosen=0,
        rows=tuple(
            # A scale path: the norm falls as the level grows.
            ShrinkageRow(level, metric, 10.0 / (1 + (level or 0)), 0, 10, 10)
            for level, metric in zip(levels, metrics, strict=True)
        ),
    )


def test_shrinkage_level_is_the_strongest_best_on_the_folds_mean():
    # Fold means: 0.8, 0.85, 0.85, 0.5 -> the strongest of the best is 1.0.
    folds = [_path([0.9, 1.0, 0.9, 0.5]), _path([0.7, 0.7, 0.8, 0.5])]
    assert demo._chosen_level(folds) == 1.0
    # Never shrunk when no level beats the unshrunk model on average.
    assert demo._chosen_level([_path([0.9, 0.8, 0.7, 0.6])]) is None
    # Losses: the lowest mean, 0.30 at 0.1; 1.0 is within 10% of it.
    losses = [0.40, 0.30, 0.32, 0.9]
    assert demo._chosen_level([_path(losses, "min")]) == 0.1
    assert demo._chosen_level([_path(losses, "min", tolerance=0.1)]) == 1.0


def _two_fits(progress):
    """A run of 200 steps in two `fit`s, as the fold methods make them."""
    train = demo.load_data()[0]
    progress.start("Run 3/45: L2(1e-3), seed 0", 200)
    for _ in range(2):
        demo._fit(demo.build_model(0), train, 100, None, progress.callbacks())
    progress.finish(0.914)


def test_progress_shows_a_run_as_fit_shows_an_epoch(capsys):
    _two_fits(demo.Progress(1))
    header, bar = capsys.readouterr().out.split("\n", 1)
    assert header == "Run 3/45: L2(1e-3), seed 0"
    # Keras's Progbar, redrawn in place over both fits: one line.
    assert bar.count("\n") == 1 and bar.endswith("\n")
    final = bar.split("\r")[-1]
    assert "200/200" in final and "test_accuracy: 0.9140" in final


def test_progress_verbose_2_writes_a_line_per_run_and_0_nothing(capsys):
    _two_fits(demo.Progress(2))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Run 3/45: L2(1e-3), seed 0"
    assert len(lines) == 2 and lines[1].startswith("200/200 - ")
    assert lines[1].endswith("test_accuracy: 0.9140")
    _two_fits(demo.Progress(0))
    assert capsys.readouterr().out == ""


def _run_cli(args, tmp_path, backend=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["KERAS_BACKEND"] = backend or keras.backend.backend()
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )


@pytest.mark.slow
def test_quick_demo_prints_the_table_and_writes_the_figures(tmp_path):
    result = _run_cli(
        [
            sys.executable,
            "-m",
            "keras_regkit",
            "demo",
            "--quick",
            "--out",
            "figures",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout
    for method in demo.METHODS:
        assert f"\n{method.label} " in output
    assert "best test accuracy at L2(" in output
    assert "\nRegularized runs on average: test accuracy " in output
    assert "\nEarlyStopping and shrink choose on 3 folds" in output
    assert "\n(--quick: 400 steps are too few" in output
    for name in FIGURES:
        path = tmp_path / "figures" / name
        assert str(path.relative_to(tmp_path)) in output
        image = imread(path)
        assert image.shape[0] > 100 and image[..., :3].std() > 0.05


# The demo's promise, at the default length. Run on JAX, where the whole
# demo takes about a minute (five on TensorFlow, whose fixed cost per
# epoch dominates on 30 points); the verdicts hold on all three backends.
@pytest.mark.slow
@pytest.mark.jax_only
def test_full_demo_regularized_runs_beat_none_on_average(tmp_path, capsys):
    outcome = demo.run(out=tmp_path, verbose=0)
    results = {result.label: result for result in outcome.results}
    assert list(results) == [method.label for method in demo.METHODS]
    assert all(len(result.runs) == 3 for result in outcome.results)
    regularized, baseline = demo.average_accuracies(outcome.results)
    assert regularized > baseline, capsys.readouterr().out
    assert results["L2(1e-3)"].mean_test_accuracy() > baseline
    # The strength sweep rises, then falls: too strong underfits, too weak
    # is no regularization at all.
    test = {point.strength: point.test_accuracy for point in outcome.sweep}
    best = max(test, key=test.get)
    assert best not in (demo.SWEEP[0], demo.SWEEP[-1]), test
    assert (
        test[demo.SWEEP[0]] < test[best] and test[demo.SWEEP[-1]] < test[best]
    )
    assert [path.name for path in outcome.figures] == list(FIGURES)


@pytest.mark.slow
@pytest.mark.tensorflow_only
@pytest.mark.other_backends
def test_console_script_switches_backend(tmp_path):
    pytest.importorskip(
        "jax", reason="`--backend jax` needs JAX: pip install jax"
    )
    script = shutil.which("keras-regkit") or str(
        pathlib.Path(sys.executable).parent / "keras-regkit"
    )
    result = _run_cli(
        [script, "demo", "--quick", "--steps", "50", "--backend", "jax"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "keras-regkit demo on jax" in result.stdout
    assert (tmp_path / "keras_regkit_demo" / "shrinkage_path.png").is_file()


def test_usage_and_bad_options(tmp_path, capsys):
    from keras_regkit.__main__ import main

    assert main([]) == 2
    assert "keras-regkit <command>" in capsys.readouterr().err
    assert main(["train"]) == 2
    for steps in ("0", "75"):
        with pytest.raises(SystemExit):
            main(["demo", "--steps", steps])
        assert "--steps must be a positive multiple of 50" in (
            capsys.readouterr().err
        )
    with pytest.raises(SystemExit):
        main(["demo", "--seeds", "0"])
    assert "--seeds must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--verbose", "3"])
    assert "--verbose: invalid choice: 3" in capsys.readouterr().err
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    with pytest.raises(SystemExit):
        main(["demo", "--out", str(taken)])
    assert f"--out {taken} is a file" in capsys.readouterr().err


def test_run_refuses_an_existing_file_for_the_figures(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    with pytest.raises(ValueError, match=r"`out`.*an existing file"):
        demo.run(out=taken, quick=True)
    assert taken.read_text() == "not a folder"


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"steps": 75}, "Expected a multiple of 50. Received: steps=75"),
        ({"steps": 0}, "steps=0"),
        ({"seeds": 0}, "seeds=0"),
        ({"seeds": 1.5}, "seeds=1.5"),
        ({"verbose": 3}, "Expected 0, 1 or 2. Received: verbose=3"),
    ],
)
def test_run_rejects_bad_arguments_before_training(
    tmp_path, arguments, message
):
    with pytest.raises((ValueError, TypeError), match=message):
        demo.run(out=tmp_path / "figures", **arguments)
    assert not (tmp_path / "figures").exists()
