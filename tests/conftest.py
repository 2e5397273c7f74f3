"""Shared pytest setup: a seeded, clean Keras session for every test."""

import keras
import pytest


@pytest.fixture(autouse=True)
def fresh_keras_session():
    """Seeds every random generator and clears Keras state after the test."""
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()


# marker -> the only backend its tests run under
BACKEND_MARKERS = {
    "tensorflow_only": "tensorflow",
    "jax_only": "jax",
    "torch_only": "torch",
}


def pytest_collection_modifyitems(config, items):
    """Skips tests marked for one backend under the other backends."""
    current = keras.backend.backend()
    for marker, backend in BACKEND_MARKERS.items():
        if backend == current:
            continue
        skip = pytest.mark.skip(reason=f"needs the {backend} backend")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)
