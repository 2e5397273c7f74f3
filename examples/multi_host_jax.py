"""Data-parallel training over several processes or hosts, the Keras 3 way.

Keras 3 trains across hosts through `keras.distribution` on the JAX backend
(TensorFlow's `MultiWorkerMirroredStrategy` does not work with Keras 3,
keras-team/keras#20585). Every process runs this same script with its own
`--process-id`; they meet at the coordinator's address (process 0's host
and a free port), split each batch between them, and end with identical
weights. The model uses keras_regkit's penalties and Dropout, and its
callbacks run in every process.

Across machines (on each host, with its own process id):

    KERAS_BACKEND=jax python multi_host_jax.py \\
        --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0
    KERAS_BACKEND=jax python multi_host_jax.py \\
        --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 1

On CPUs the processes exchange gradients over gloo; on GPUs and TPUs JAX
uses the accelerators' own collectives. Without `--coordinator` the script
demonstrates the same here: it starts two processes on 127.0.0.1 and checks
that they end with the same weights.

Run: `KERAS_BACKEND=jax python examples/multi_host_jax.py [--quick]`
(needs `pip install "keras-regkit[tensorflow-cpu]" jax`: the data is a
`tf.data.Dataset`, which Keras shards between the processes).
"""

import argparse
import json
import os
import socket
import subprocess
import sys


def _train(args):
    """This process's share of the training; prints its summary as JSON."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_regkit import L2, ExpAbs, callbacks
    from keras_regkit.layers import Dropout

    keras.distribution.initialize(
        job_addresses=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices)
    )
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    rows = 512 if args.quick else 8192
    x = rng.normal(size=(rows, 16)).astype("float32")
    y = (np.sin(x[:, :3]).sum(axis=1, keepdims=True)).astype("float32")
    # Repeated, with the steps given: once Keras shards the dataset between
    # the processes, it cannot count its batches any more.
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(64).repeat()
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(
                64, activation="relu", kernel_regularizer=L2(1e-4)
            ),
            Dropout(0.1, seed=1),
            keras.layers.Dense(1, kernel_regularizer=ExpAbs(1e-4)),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    history = model.fit(
        data,
        epochs=3 if args.quick else 30,
        steps_per_epoch=rows // 64,
        shuffle=False,  # a tf.data.Dataset shuffles itself, if asked to
        verbose=0,
        callbacks=[
            callbacks.EarlyStopping(
                monitor="loss", patience=3, restore_best_weights=True
            ),
            callbacks.RegularizationMonitor(),
        ],
    )
    weights = model.get_weights()
    print(
        json.dumps(
            {
                "process": args.process_id,
                "devices": len(devices),
                "final_loss": history.history["loss"][-1],
                "penalty": history.history["penalty"][-1],
                "weights_checksum": float(sum(np.sum(w) for w in weights)),
            }
        )
    )


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_locally(quick, processes=2, timeout=600):
    """Starts `processes` processes here and compares what they end with."""
    coordinator = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ, KERAS_BACKEND="jax")
    started = []
    try:
        for process_id in range(processes):
            command = [
                sys.executable,
                __file__,
                "--coordinator",
                coordinator,
                "--num-processes",
                str(processes),
                "--process-id",
                str(process_id),
            ]
            if quick:
                command.append("--quick")
            started.append(
                subprocess.Popen(command, env=env, stdout=subprocess.PIPE)
            )
        outputs = []
        for process in started:
            out, _ = process.communicate(timeout=timeout)
            if process.returncode != 0:
                raise SystemExit(f"a process failed ({process.returncode})")
            outputs.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()
    for output in outputs:
        print(json.dumps(output))
    same = len({output["weights_checksum"] for output in outputs}) == 1
    print(f"all {processes} processes hold the same weights: {same}")
    if not same:
        raise SystemExit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coordinator", help="host:port of process 0")
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a short run")
    args = parser.parse_args()
    if args.coordinator:
        _train(args)
    else:
        _run_locally(args.quick, args.num_processes)


if __name__ == "__main__":
    main()
