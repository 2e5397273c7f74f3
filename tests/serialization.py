"""The serialization checks every public keras_regkit object goes through.

Built on public `keras.saving` functions only: a config round trip compared as
JSON, and a `.keras` file saved here and loaded in a fresh Python process that
imports nothing but numpy, keras and keras_regkit.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np


def assert_config_round_trip(obj):
    """Serializes `obj` to JSON and back; the configs must be identical.

    Returns the rebuilt object.
    """
    config = keras.saving.serialize_keras_object(obj)
    text = json.dumps(config)
    rebuilt = keras.saving.deserialize_keras_object(json.loads(text))
    assert type(rebuilt) is type(obj)
    assert json.dumps(keras.saving.serialize_keras_object(rebuilt)) == text
    return rebuilt


def run_in_fresh_process(code, timeout=300):
    """Runs Python `code` in a new interpreter on the current Keras backend.

    Returns its stdout; fails the test with its stderr if it exits non-zero.
    """
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"fresh process failed ({result.returncode}):\n{result.stderr}"
        )
    return result.stdout


# Two logical CPUs must be configured before TensorFlow starts, hence a
# fresh process; the code run after this prelude sees `tf`, `strategy` (a
# MirroredStrategy over both) and `one_device` (a OneDeviceStrategy).
_TWO_CPUS = """
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
one_device = tf.distribute.OneDeviceStrategy("/cpu:0")
"""


def run_on_two_cpus(code, timeout=300):
    """Runs `code` in a fresh process with a MirroredStrategy over 2 CPUs."""
    return run_in_fresh_process(
        _TWO_CPUS + textwrap.dedent(code), timeout=timeout
    )


def assert_loads_in_fresh_process(model, x, tmp_path):
    """Saves `model` to `.keras`; a fresh process must reload it exactly.

    The fresh process imports only numpy, keras and keras_regkit, then
    compares its predictions and `model.losses` with the ones computed here.
    """
    path = str(tmp_path / "model.keras")
    model.save(path)
    inputs = str(tmp_path / "inputs.npy")
    np.save(inputs, x)
    expected_predictions = keras.ops.convert_to_numpy(model(x))
    expected_losses = np.array(
        [float(keras.ops.convert_to_numpy(loss)) for loss in model.losses]
    )
    outputs = str(tmp_path / "outputs.npz")
    run_in_fresh_process(
        f"""
        import numpy as np
        import keras
        import keras_regkit  # registers the classes the file names

        model = keras.saving.load_model({path!r})
        x = np.load({inputs!r})
        predictions = keras.ops.convert_to_numpy(model(x))
        losses = np.array(
            [float(keras.ops.convert_to_numpy(l)) for l in model.losses]
        )
        np.savez({outputs!r}, predictions=predictions, losses=losses)
        """
    )
    loaded = np.load(outputs)
    np.testing.assert_array_equal(loaded["predictions"], expected_predictions)
    np.testing.assert_allclose(loaded["losses"], expected_losses, rtol=1e-6)
    assert len(expected_losses) > 0


def run_together(commands, timeout=300):
    """Runs processes at the same time; returns their `(code, out, err)`.

    Args:
        commands: a list of `(argv, env)` pairs.
        timeout: seconds each process may take, counted from when the
            previous one was collected.

    Every process is killed and its pipes closed before this returns, also
    when one times out or the caller's assertion fails.
    """
    processes = []
    try:
        for argv, env in commands:
            processes.append(
                subprocess.Popen(
                    argv,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        return [_collect(process, timeout) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            for stream in (process.stdout, process.stderr):
                stream.close()


def _collect(process, timeout):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err
