"""Search penalty strengths with keras-tuner, on one machine or many.

keras-tuner's distributed mode runs one *chief* (the oracle, which hands out
trials and keeps the results) and any number of *workers* (which train the
trials), all pointed at the same `--directory`. Each process reads three
environment variables:

- `KERASTUNER_TUNER_ID`: `chief` for the oracle, any other unique name
  (`tuner0`, `tuner1`, ...) for a worker;
- `KERASTUNER_ORACLE_IP`: the chief's address, as the workers can reach it;
- `KERASTUNER_ORACLE_PORT`: a port open on the chief.

Across machines (the directory on a shared file system):

    # on the chief, 10.0.0.1
    export KERASTUNER_ORACLE_PORT=8000
    KERASTUNER_TUNER_ID=chief KERASTUNER_ORACLE_IP=0.0.0.0 \\
        python distributed_tuning.py --directory /shared/kt
    # on each worker machine, with its own id (tuner0, tuner1, ...)
    export KERASTUNER_ORACLE_PORT=8000
    KERASTUNER_TUNER_ID=tuner0 KERASTUNER_ORACLE_IP=10.0.0.1 \\
        python distributed_tuning.py --directory /shared/kt

Without those variables the script demonstrates the same on this machine:
it starts a chief and two workers on 127.0.0.1 and prints the chief's
report. The model is a small network on scikit-learn's digits, and the
search chooses a penalty kind and strength per layer with
`keras_regkit.tuning.RegularizedHyperModel`.

Run: `python examples/distributed_tuning.py [--quick]`
(needs `pip install "keras-regkit[tuner,examples]"`).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile


def _build():
    import keras

    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _search(directory, quick):
    """This process's part of the search: the oracle, or trials."""
    import keras_tuner
    from sklearn.datasets import load_digits

    from keras_regkit.tuning import RegularizedHyperModel

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    if quick:
        x, y = x[:400], y[:400]
    tuner = keras_tuner.RandomSearch(
        RegularizedHyperModel(
            _build, per_layer=True, kinds=["none", "l1", "l2", "exp_abs"]
        ),
        objective="val_accuracy",
        max_trials=4 if quick else 12,
        directory=directory,
        project_name="regularization",
        seed=0,
    )
    tuner.search(
        x,
        y,
        validation_split=0.3,
        epochs=2 if quick else 30,
        batch_size=32,
        verbose=0,
    )
    if os.environ.get("KERASTUNER_TUNER_ID", "chief") == "chief":
        best = tuner.oracle.get_best_trials(1)[0]
        print(
            json.dumps(
                {
                    "best_val_accuracy": best.score,
                    "best_hyperparameters": best.hyperparameters.values,
                    "trials": len(tuner.oracle.trials),
                },
                indent=2,
            )
        )


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_locally(quick, workers=2, timeout=900):
    """Starts a chief and `workers` workers here; prints the chief's report."""
    directory = tempfile.mkdtemp(prefix="keras_regkit_tuning_")
    env = dict(
        os.environ,
        KERASTUNER_ORACLE_IP="127.0.0.1",
        KERASTUNER_ORACLE_PORT=str(_free_port()),
    )
    command = [sys.executable, __file__, "--directory", directory]
    if quick:
        command.append("--quick")
    ids = ["chief"] + [f"tuner{i}" for i in range(workers)]
    processes = {}
    try:
        for tuner_id in ids:
            print(f"starting {tuner_id}", flush=True)
            processes[tuner_id] = subprocess.Popen(
                command,
                env=dict(env, KERASTUNER_TUNER_ID=tuner_id),
                stdout=subprocess.PIPE,
                text=True,
            )
        outputs = {}
        for tuner_id, process in processes.items():
            outputs[tuner_id], _ = process.communicate(timeout=timeout)
            if process.returncode != 0:
                raise SystemExit(f"{tuner_id} failed ({process.returncode})")
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    # The chief's report, among what keras-tuner itself prints around it.
    chief = outputs["chief"]
    report, _ = json.JSONDecoder().raw_decode(chief, chief.index("{"))
    print(json.dumps(report, indent=2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny search")
    parser.add_argument("--directory", help="the search's shared directory")
    args = parser.parse_args()
    if "KERASTUNER_TUNER_ID" in os.environ:
        if not args.directory:
            parser.error("--directory is required for a chief or a worker")
        _search(args.directory, args.quick)
    else:
        _run_locally(args.quick)


if __name__ == "__main__":
    main()
