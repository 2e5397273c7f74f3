"""Shared pytest setup: a seeded, clean Keras session for every test."""

import keras
import pytest


@pytest.fixture(autouse=True)
def fresh_keras_session():
    """Seeds every random generator and clears Keras state after the test."""
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()


def pytest_collection_modifyitems(config, items):
    """Skips tests marked `tensorflow_only` under the JAX and torch backends."""
    if keras.backend.backend() == "tensorflow":
        return
    skip = pytest.mark.skip(reason="needs the TensorFlow backend")
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)
