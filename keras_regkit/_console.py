"""Messages written where Keras writes its own progress and messages.

Keras's progress bars and callback messages go to standard output, or to
absl's log once `keras.config.disable_interactive_logging()` has been
called (as in servers and batch jobs). keras_regkit's go the same way, so
one switch quiets both.
"""

import sys

import keras
from absl import logging  # a dependency of Keras, which logs through it


def write_line(message):
    """Writes `message` and a line break where Keras writes its messages."""
    if keras.config.is_interactive_logging_enabled():
        sys.stdout.write(f"{message}\n")
        sys.stdout.flush()
    else:
        logging.info(message)
