"""Every script in examples/ runs end to end (in its quick mode).

The examples use the public API that the other tests check on every
backend; most run here on TensorFlow only, to keep CI short.
"""

import json
import os
import pathlib
import re
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


def _table_rows(output, header_end, names):
    """The rows after `header_end` and a dashed rule, checked against names.

    Returns each row's fields after its name, split on whitespace.
    """
    rows = output.split(header_end + "\n", 1)[1].splitlines()
    assert set(rows[0]) == {"-"}, rows[0]
    rows = rows[1 : 1 + len(names)]
    assert len(rows) == len(names)
    fields = []
    for row, name in zip(rows, names, strict=True):
        assert row.startswith(name), row
        fields.append(row[len(name) :].split())
    return fields


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_dropout_circles_prints_accuracies_and_mc_uncertainty():
    pytest.importorskip("sklearn")
    output = run_example("dropout_circles.py", "--quick")
    rows = _table_rows(
        output, "test loss", ["no dropout", "Dropout(0.4)", "ramp 0 -> 0.4"]
    )
    for train_accuracy, test_accuracy, plus_minus, _, _, loss in rows:
        assert 0.0 <= float(train_accuracy) <= 1.0
        assert 0.0 <= float(test_accuracy) <= 1.0
        assert plus_minus == "±"
        assert float(loss) >= 0.0
    groups = _table_rows(
        output, "mean std", ["all", "correct", "misclassified"]
    )
    for _, mean_std in groups:
        if mean_std != "n/a":  # no point in the group
            assert 0.0 <= float(mean_std) <= 0.5  # std of a probability
    everything, correct, wrong = (int(count) for count, _ in groups)
    assert everything == 70  # one seed in quick mode
    assert correct + wrong == everything
    assert "\nMeasured: " in output


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_early_stopping_digits_prints_a_row_and_a_reason_per_criterion():
    pytest.importorskip("sklearn")
    output = run_example("early_stopping_digits.py", "--quick")
    names = ["none", "patience=10", "GL alpha=5", "PQ alpha=0.5", "UP s=3"]
    rows = _table_rows(output, "vs none", names)
    for epochs, kept, accuracy, plus_minus, _, _, loss, _ in rows:
        assert 1 <= float(kept) <= float(epochs) <= 20  # quick: 20 epochs
        assert 0.0 <= float(accuracy) <= 1.0
        assert plus_minus == "±"
        assert float(loss) >= 0.0
    assert rows[0][0] == rows[0][1] == "20.0"  # no early stopping
    reasons = output.split("Why each run stopped (seed 0):\n", 1)[1]
    reasons = reasons.splitlines()
    assert len(reasons) == len(names)
    for line, name in zip(reasons, names, strict=True):
        assert line.strip().startswith(name), line
        assert line.strip()[len(name) :].strip(), line


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_shrink_after_training_prints_reports_and_a_summary():
    pytest.importorskip("sklearn")
    output = run_example("shrink_after_training.py", "--quick")
    for method in ("prune", "soft_threshold"):
        report = output.split(f"shrink(method='{method}')", 1)[1]
        lines = report.split("\n\n", 1)[0].splitlines()[1:]
        assert lines[0].startswith("level")
        assert lines[1].startswith("(before)")
        assert len(lines) >= 3  # at least one level tried
        assert sum("<- chosen" in line for line in lines) <= 1
    rows = _table_rows(
        output, "all zeros", ["trained", "prune", "soft_threshold"]
    )
    for level, metric, accuracy, loss, kernel_zeros, all_zeros in rows:
        if level != "-":
            assert float(level) > 0.0
        assert 0.0 <= float(metric) <= 1.0  # validation accuracy
        assert 0.0 <= float(accuracy) <= 1.0
        assert float(loss) >= 0.0
        for percent in (kernel_zeros, all_zeros):
            assert percent.endswith("%")
            assert 0.0 <= float(percent[:-1]) <= 100.0
    assert rows[1][0] == "-" or float(rows[1][0]) < 1.0  # a pruned fraction


def test_prune_and_compact_prints_sparsities_and_a_smaller_model():
    pytest.importorskip("sklearn")
    output = run_example("prune_and_compact.py", "--quick")
    for label, final in (("pruned 90%", 0.9), ("units 75%", 0.75)):
        line = output.split(f"{label}: sparsity after each epoch: ", 1)[1]
        logged = [float(s) for s in line.splitlines()[0].split(", ")]
        assert logged == sorted(logged)  # the schedule never falls
        assert logged[-1] == pytest.approx(final, abs=0.005)
    assert "dead units per layer: {'hidden1': 192, 'hidden2': 192}" in output
    names = ["dense", "pruned 90%", "units 75%", "units 75%, compact"]
    rows = dict(zip(names, _table_rows(output, "ms/batch", names), strict=True))
    # test accuracy, kernel zeros, parameters, ms per batch
    compact_params = 2 * (64 * 64 + 64) + (64 * 10 + 10)  # 64 units left
    assert int(rows["units 75%, compact"][2]) == compact_params
    assert int(rows["dense"][2]) == int(rows["units 75%"][2]) == 85002
    assert rows["units 75%, compact"][0] == rows["units 75%"][0]
    assert rows["pruned 90%"][1] == "90%"


@pytest.mark.tensorflow_only
def test_swa_and_sam_noisy_labels_prints_a_row_per_method():
    pytest.importorskip("sklearn")
    output = run_example("swa_and_sam_noisy_labels.py", "--quick")
    # --quick: 3 epochs, the last third (one epoch) averaged
    assert "SWA: the average of 1 snapshots" in output
    assert "SAM + SWA: the average of 1 snapshots" in output
    assert "3 epochs, 30% of the training labels wrong" in output
    methods = ["plain", "SWA", "SAM", "SAM + SWA"]
    lines = output.split("noisy-train accuracy\n", 1)[1].splitlines()
    for method, line in zip(methods, lines, strict=True):
        assert line.startswith(method)
        test, noisy = (float(v) for v in line[len(method) :].split())
        assert 0.5 < test <= 1.0  # far above chance, even in 3 epochs
        assert 0.1 < noisy < 0.9


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_proximal_feature_selection_counts_every_input_once():
    pytest.importorskip("sklearn")
    output = run_example("proximal_feature_selection.py", "--quick")
    rows = _table_rows(
        output, "val mse", ["none", "keras L1", "L1 + ProximalStep"]
    )
    for strength, zeros, informative, uninformative, small, mse in rows:
        assert strength == "-" or float(strength) > 0.0
        kept_informative, of_informative = map(int, informative.split("/"))
        kept_other, of_other = map(int, uninformative.split("/"))
        assert (of_informative, of_other) == (5, 45)
        assert int(zeros) + kept_informative + kept_other == 50
        assert 0 <= int(small) <= 50 - int(zeros)
        assert 0.0 <= float(mse) < float("inf")
    truth = output.split("Truly informative inputs: ", 1)[1].splitlines()[0]
    assert len(json.loads(truth)) == 5
    kept = output.split("+ ProximalStep: ", 1)[1].splitlines()[0]
    assert all(0 <= i < 50 for i in json.loads(kept))


NUMBER = re.compile(r"^[+-]?\d+\.\d+$")


def _table(output, header):
    """The rows of the table whose header line matches the regex `header`.

    Rows run from after the dashed line to the first blank line, or to the
    first line that does not start like a row (a closing sentence).
    """
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(header, line))
    assert set(lines[start + 1]) == {"-"}, lines[start + 1]
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append(line)
    return rows


def _floats(row, count):
    """The last `count` whitespace-separated fields of `row`, as floats."""
    fields = row.split()[-count:]
    for field in fields:
        assert NUMBER.match(field), row
    return [float(field) for field in fields]


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_lstm_penalties_prints_a_row_per_setup_and_both_penalties():
    output = run_example("lstm_penalties.py", "--quick")
    rows = _table(output, r"setup\s+input\s+recurrent")
    names = ["none", "same", "light input", "light recurrent"]
    assert len(rows) == len(names)
    for row, name in zip(rows, names, strict=True):
        assert row.startswith(name), row
        # train acc, test acc, ±, std, vs none, test loss
        fields = row.split()[-6:]
        assert fields[2] == "±", row
        train, test, std, change, loss = (
            float(fields[i]) for i in (0, 1, 3, 4, 5)
        )
        assert 0.0 <= train <= 1.0 and 0.0 <= test <= 1.0
        assert std >= 0.0 and -1.0 <= change <= 1.0 and loss > 0.0
    assert rows[0].split()[1:3] == ["none", "none"]
    assert rows[1].split()[1:3] == ["L2(0.001)", "L2(0.001)"]
    assert re.search(r"(No penalty beat|Best test accuracy)", output)
    # keras_regkit.penalties(model): both LSTM kernels, each penalised.
    after = output.split("keras_regkit.penalties(model)", 1)[1]
    penalties = dict(line.split() for line in after.splitlines()[1:] if line)
    assert sorted(penalties) == [
        "lstm/lstm_cell/kernel",
        "lstm/lstm_cell/recurrent_kernel",
    ]
    assert all(float(value) > 0.0 for value in penalties.values())


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_cnn_per_layer_penalties_prints_the_monitor_logs():
    pytest.importorskip("sklearn")
    output = run_example("cnn_per_layer_penalties.py", "--quick")
    models = ["none", "per-layer", "group-lasso"]
    summary = _table(output, r"model\s+train acc")
    assert [row.split()[0] for row in summary[:3]] == models
    for row in summary[:3]:
        assert row.endswith(" of 64"), row
        train, test, change, penalty, quiet = _floats(row[: -len(" of 64")], 5)
        assert 0.0 <= train <= 1.0 and 0.0 <= test <= 1.0
        assert -1.0 <= change <= 1.0 and penalty >= 0.0
        assert 0 <= quiet <= 64
    penalties = [_floats(row[: -len(" of 64")], 2)[0] for row in summary[:3]]
    assert penalties[0] == 0.0  # no penalty, none logged
    assert penalties[1] > 0.0
    assert re.match(r"(No penalty beat|Best test accuracy)", summary[3])

    layers = ["conv_1", "conv_2", "dense_1", "dense_out"]
    logs = _table(output, r"model\s+layer")
    assert [row.split()[:2] for row in logs] == [
        [model, layer] for model in models for layer in layers
    ]
    for row in logs:
        model, _, penalty, norm = row.split()
        if model == "none":
            assert penalty == "-"
        else:
            assert NUMBER.match(penalty) and float(penalty) > 0.0, row
        assert NUMBER.match(norm) and float(norm) > 0.0, row


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_tuner_search_prints_the_best_trial_and_both_test_scores():
    pytest.importorskip("sklearn")
    pytest.importorskip("keras_tuner")
    output = run_example("tuner_search.py", "--quick")
    match = re.search(r"Best trial: \S+, val cross-entropy (\S+), with", output)
    assert match and float(match.group(1)) > 0.0, output
    after = output[match.end() :].splitlines()[1:]
    hyperparameters = dict(line.split() for line in after[: after.index("")])
    # per_layer=True: one choice per Dense layer.
    for layer in ("hidden_1", "hidden_2", "output"):
        assert hyperparameters[f"regularizer/{layer}"] in (
            "none",
            "l1",
            "l2",
            "elastic_net",
            "exp_abs",
        )
    rows = _table(output, r"model\s+val xent")
    assert [row.split()[0] for row in rows[:2]] == ["baseline", "best"]
    for row in rows[:2]:
        score, accuracy, loss = _floats(row, 3)
        assert score > 0.0 and 0.0 <= accuracy <= 1.0 and loss > 0.0
    assert rows[2].startswith("Best minus baseline: test accuracy ")
