"""Keras test folders: `model/` runs under any Keras backend (set KERAS_BACKEND on the command
line, before Python starts); `tf/` needs the TensorFlow backend."""

import os
import sys

import pytest

collect_ignore = []
if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
    # TensorFlow-only features (tf.data, XLA generate, SavedModel) run in the TensorFlow session.
    collect_ignore.append("tf")

# `keras_test_helpers` (shared configs and `assert_close`) sits next to this file.
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="module")
def eager_generation():
    """`generate` without XLA for a test module: XLA compiles each decoding spec in seconds, and
    tests/keras/tf covers the XLA path."""
    from gpt2_keras import generation

    generation.JIT_COMPILE = False
    yield
    generation.JIT_COMPILE = True
