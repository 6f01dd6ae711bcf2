"""Shared test configuration: pytester drives the pytest plugin's tests (tests/unit/test_plugin.py).

Keras 3 picks its backend when first imported, and its default (TensorFlow) is not installed
here: every test that imports keras gets the jax backend unless the environment says otherwise
(a child process tests the torch backend explicitly).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

pytest_plugins = ["pytester"]
