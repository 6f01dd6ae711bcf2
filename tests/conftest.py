"""Shared test configuration: pytester drives the pytest plugin's tests (tests/unit/test_plugin.py)."""

pytest_plugins = ["pytester"]
