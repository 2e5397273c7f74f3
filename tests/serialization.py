"""The serialization checks every public keras_regkit object goes through.

Built on public `keras.saving` functions only: a config round trip compared as
JSON, and a `.keras` file saved here and loaded in a fresh Python process that
imports nothing but numpy, keras and keras_regkit.
"""

import json

import keras
import numpy as np
from processes import run_in_fresh_process


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
