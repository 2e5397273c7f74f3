"""Runs test code in other Python processes.

A fresh interpreter sets up what must come before the backend starts
(devices, distribution) and proves that a saved file needs nothing of the
process that wrote it.
"""

import os
import subprocess
import sys
import textwrap

import keras


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
