"""Tests for keras_regkit.plot: each figure renders, non-blank, labelled."""

import io

import keras
import numpy as np
import pytest
from processes import run_in_fresh_process

from keras_regkit import L1, ShrinkageReport, ShrinkageRow, plot
from keras_regkit.callbacks import EarlyStopping


def _rendered(figure):
    """The figure as an RGB(A) array, through a PNG file with Agg."""
    from matplotlib.image import imread

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    buffer.seek(0)
    return imread(buffer, format="png")


def _assert_not_blank(image):
    pixels = image[..., :3].reshape(-1, 3)
    assert pixels.std() > 0.05  # not one flat colour
    assert np.mean(np.all(pixels > 0.98, axis=1)) < 0.995  # not all white


def _labels(figure):
    return [(axes.get_xlabel(), axes.get_ylabel()) for axes in figure.axes]


def test_learning_curves_mark_the_onset_and_the_early_stop():
    x = np.random.default_rng(0).normal(size=(40, 3))
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    stopper = EarlyStopping(monitor="loss", patience=0, min_delta=10.0)
    history = model.fit(x, x[:, :1], epochs=5, verbose=0, callbacks=[stopper])
    figure = plot.plot_learning_curves(
        {
            "loss": [1.0, 0.6, 0.4, 0.3, 0.25],
            "val_loss": [1.1, 0.8, 0.7, 0.75, 0.9],
        },
        early_stopping=stopper,
    )
    assert _labels(figure) == [("epoch", "loss")]
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert "overfitting onset (epoch 3)" in legend
    assert f"early stop (epoch {stopper.stopped_epoch + 1})" in legend
    _assert_not_blank(_rendered(figure))
    # A History object works as well as its dict.
    assert _labels(plot.plot_learning_curves(history)) == [("epoch", "loss")]


def test_learning_curves_of_an_accuracy_metric_take_its_maximum():
    figure = plot.plot_learning_curves(
        {"accuracy": [0.5, 0.8, 0.9], "val_accuracy": [0.5, 0.7, 0.6]},
        metric="accuracy",
    )
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert "overfitting onset (epoch 2)" in legend
    assert figure.axes[0].get_yscale() == "linear"


def test_weight_histograms_of_a_model_before_and_after():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, kernel_regularizer=L1(0.1), name="hidden"),
            keras.layers.Dense(1, name="out"),
        ]
    )
    before = {
        name: np.array(w)
        for name, w in [
            ("hidden/kernel", model.layers[0].kernel),
            ("out/kernel", model.layers[1].kernel),
        ]
    }
    kernel = keras.ops.convert_to_numpy(model.layers[0].kernel).copy()
    kernel[np.abs(kernel) < 0.3] = 0.0
    model.layers[0].kernel.assign(kernel)
    figure = plot.plot_weight_histograms(model, before=before)
    visible = [axes for axes in figure.axes if axes.get_visible()]
    assert [axes.get_title() for axes in visible] == [
        "hidden/kernel",
        "out/kernel",
    ]
    assert all(
        (a.get_xlabel(), a.get_ylabel()) == ("weight value", "count")
        for a in visible
    )
    legend = [t.get_text() for t in visible[0].get_legend().get_texts()]
    zeros = np.mean(kernel == 0.0)
    assert legend == [
        "before (0% exact zeros)",
        f"after ({zeros:.0%} exact zeros)",
    ]
    _assert_not_blank(_rendered(figure))


def test_shrinkage_path():
    report = ShrinkageReport(
        method="soft_threshold",
        monitor="accuracy",
        mode="max",
        select="best",
        tolerance=0.0,
        rows=(
            ShrinkageRow(None, 0.90, 10.0, 0.0, 100, 100),
            ShrinkageRow(0.01, 0.91, 9.0, 0.2, 80, 100),
            ShrinkageRow(0.1, 0.93, 6.0, 0.6, 40, 100),
            ShrinkageRow(1.0, 0.50, 1.0, 0.99, 1, 100),
        ),
        chosen=2,
    )
    figure = plot.plot_shrinkage_path(report)
    labels = _labels(figure)
    assert labels[0] == ("shrinkage level", "validation accuracy")
    assert labels[1] == ("shrinkage level", "fraction of exact zeros")
    assert labels[2][1] == "L2 norm of the shrunk weights"
    assert figure.axes[0].get_xscale() == "log"
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert "chosen: 0.1" in legend
    _assert_not_blank(_rendered(figure))


def test_strength_sweep():
    figure = plot.plot_strength_sweep(
        {
            1e-1: {"train accuracy": 0.8, "test accuracy": 0.78},
            1e-3: {"train accuracy": 1.0, "test accuracy": 0.93},
            1e-6: {"train accuracy": 1.0, "test accuracy": 0.90},
        }
    )
    assert _labels(figure) == [("regularization strength", "metric")]
    axes = figure.axes[0]
    assert axes.get_xscale() == "log"
    assert [line.get_label() for line in axes.get_lines()] == [
        "train accuracy",
        "test accuracy",
    ]
    np.testing.assert_allclose(
        axes.get_lines()[1].get_xdata(), [1e-6, 1e-3, 1e-1]
    )
    _assert_not_blank(_rendered(figure))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(TypeError, match="argument `history`"):
        plot.plot_learning_curves([1.0, 0.5])
    with pytest.raises(ValueError, match="Available: loss"):
        plot.plot_learning_curves({"loss": [1.0]}, metric="accuracy")
    with pytest.raises(ValueError, match="strengths must be positive"):
        plot.plot_strength_sweep({0.0: 1.0})
    with pytest.raises(ValueError, match="non-empty dict"):
        plot.plot_strength_sweep({})
    with pytest.raises(TypeError, match="argument `model_or_weights`"):
        plot.plot_weight_histograms(3)


def test_no_window_and_no_global_figures():
    import matplotlib.pyplot as pyplot

    before = pyplot.get_fignums()
    plot.plot_strength_sweep({1e-3: 0.9, 1e-2: 0.95})
    assert pyplot.get_fignums() == before


@pytest.mark.slow
def test_without_matplotlib_the_error_says_what_to_install():
    output = run_in_fresh_process(
        """
        import sys
        sys.modules["matplotlib"] = None
        from keras_regkit import plot
        try:
            plot.plot_strength_sweep({1e-3: 0.9})
        except ImportError as error:
            print(error)
        """
    )
    assert 'pip install "keras-regkit[plot]"' in output
