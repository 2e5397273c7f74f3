"""Tests for keras_regkit.ShrinkageReport."""

import json

import pytest

from keras_regkit import ShrinkageReport, ShrinkageRow

# Arguments and numpy: nothing here depends on the Keras backend.
pytestmark = pytest.mark.backend_independent


def _report(chosen, metrics=(0.5, 0.4, float("nan"))):
    rows = (
        ShrinkageRow(None, metrics[0], 10.0, 0.0, 100, 100),
        ShrinkageRow(0.5, metrics[1], 6.0, 0.5, 50, 100),
        ShrinkageRow(0.9, metrics[2], 2.0, 0.9, 10, 100),
    )
    return ShrinkageReport(
        method="prune",
        monitor="loss",
        mode="min",
        select="best",
        tolerance=0.01,
        rows=rows,
        chosen=chosen,
    )


def test_before_after_and_chosen_level():
    report = _report(chosen=1)
    assert report.before.level is None and report.before.metric == 0.5
    assert report.after.level == 0.5 and report.after.nonzero == 50
    assert report.chosen_level == 0.5
    kept = _report(chosen=0)
    assert kept.chosen_level is None and kept.after is kept.before


def test_as_table_has_one_line_per_row_and_marks_the_choice():
    lines = _report(chosen=1).as_table().splitlines()
    assert lines[0].split() == [
        "level",
        "loss",
        "l2_norm",
        "zeros",
        "nonzero/total",
    ]
    assert lines[1].startswith("(before)") and "100/100" in lines[1]
    assert lines[2].startswith("0.5") and lines[2].endswith("<- chosen")
    assert "50.0%" in lines[2]
    assert "nan" in lines[3] and "chosen" not in lines[3]
    assert not any(
        "chosen" in line for line in _report(chosen=0).as_table().splitlines()
    )


def test_to_dict_is_json_ready_even_with_a_nan_metric():
    document = json.loads(json.dumps(_report(chosen=1).to_dict()))
    assert document["chosen"] == 1 and document["chosen_level"] == 0.5
    assert document["rows"][0] == {
        "level": None,
        "metric": 0.5,
        "l2_norm": 10.0,
        "zero_fraction": 0.0,
        "nonzero": 100,
        "parameters": 100,
    }
    assert document["rows"][2]["metric"] == "nan"
    assert document["method"] == "prune" and document["tolerance"] == 0.01


def test_reports_are_immutable():
    report = _report(chosen=1)
    with pytest.raises(AttributeError):
        report.chosen = 2
