"""Tests for the overfitting lab, `keras-regkit demo`."""

import os
import pathlib
import shutil
import subprocess
import sys

import keras
import pytest
from matplotlib.image import imread

from keras_regkit import demo

FIGURES = (
    "learning_curves.png",
    "decision_boundaries.png",
    "weight_histograms.png",
    "strength_sweep.png",
    "shrinkage_path.png",
)


def _runs(test_accuracies):
    return [
        {
            "train_accuracy": 1.0,
            "test_accuracy": accuracy,
            "test_loss": 0.3,
            "kernel_norm": 2.0,
            "zero_fraction": 0.0,
            "steps": 2000,
            "seconds": 1.0,
        }
        for accuracy in test_accuracies
    ]


def test_the_table_says_honestly_whether_a_method_helps():
    table = demo.format_table(
        {
            "none": _runs([0.90, 0.92]),
            "L2(1e-3)": _runs([0.94, 0.94]),
            "L1(1e-4)": _runs([0.91, 0.91]),
            "Dropout(0.4)": _runs([0.85, 0.87]),
        }
    ).splitlines()
    assert table[0].split()[:3] == ["method", "train", "acc"]
    rows = {line.split()[0]: line for line in table[2:]}
    assert rows["none"].endswith("baseline")
    assert "0.910 ± 0.010" in rows["none"]
    assert rows["L2(1e-3)"].endswith("helps") and "+0.030" in rows["L2(1e-3)"]
    assert rows["L1(1e-4)"].endswith("no gain here")
    assert rows["Dropout(0.4)"].endswith("hurts here")


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
        assert f"\n{method} " in output
    assert "best test accuracy at L2(" in output
    for name in FIGURES:
        path = tmp_path / "figures" / name
        assert str(path.relative_to(tmp_path)) in output
        image = imread(path)
        assert image.shape[0] > 100 and image[..., :3].std() > 0.05


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_console_script_switches_backend(tmp_path):
    script = shutil.which("keras-regkit") or str(
        pathlib.Path(sys.executable).parent / "keras-regkit"
    )
    result = _run_cli(
        [script, "demo", "--quick", "--seeds", "1", "--backend", "jax"],
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
    with pytest.raises(SystemExit):
        main(["demo", "--steps", "0"])
    assert "--steps must be a positive integer" in capsys.readouterr().err
