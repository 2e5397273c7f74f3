"""Every script in examples/ runs end to end (in its quick mode)."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import pytest

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"


def run_example(name, *args):
    """Runs `examples/<name>` on the current backend; returns its stdout."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, KERAS_BACKEND=keras.backend.backend()),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_weight_decay_moons_prints_a_row_per_penalty():
    pytest.importorskip("sklearn")
    output = run_example("weight_decay_moons.py", "--quick")
    rows = output.split("kernel norm\n", 1)[1].splitlines()[1:]
    expected = ["none", "L1(", "L2(", "ElasticNet(", "ExpAbs(", "GroupLasso("]
    assert len(rows) == len(expected)
    for row, name in zip(rows, expected, strict=True):
        assert row.startswith(name), row
    baseline = rows[0].split()
    assert 0.5 <= float(baseline[1]) <= 1.0  # train accuracy


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_distributed_tuning_runs_a_chief_and_two_workers():
    pytest.importorskip("sklearn")
    output = run_example("distributed_tuning.py", "--quick")
    report = json.loads(output[output.index("{") :])
    assert report["trials"] == 4
    assert 0.0 <= report["best_val_accuracy"] <= 1.0
    assert "regularizer/hidden" in report["best_hyperparameters"]


@pytest.mark.slow
@pytest.mark.jax_only
def test_multi_host_jax_ends_with_the_same_weights_everywhere():
    output = run_example("multi_host_jax.py", "--quick")
    assert output.strip().endswith("hold the same weights: True")
