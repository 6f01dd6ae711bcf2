"""pytest plugin (registered under ``pytest11``): seed option, report header, marker.

Importing it imports nothing heavy: no numpy, no torch.
"""

from __future__ import annotations

DEFAULT_SEED = 0


def pytest_addoption(parser):
    group = parser.getgroup("stats_dropout", "stats_dropout statistical dropout checks")
    group.addoption(
        "--stats-dropout-seed", action="store", type=int, default=None, dest="stats_dropout_seed",
        help=f"seed for stats_dropout batteries and checks (default: {DEFAULT_SEED})")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "stats_dropout: a statistical dropout check from stats_dropout.parametrize_with_checks")


def pytest_report_header(config):
    return f"stats_dropout seed: {get_seed(config)} (replay with --stats-dropout-seed={get_seed(config)})"


def get_seed(config):
    """The seed in use for this session."""
    value = config.getoption("stats_dropout_seed", default=None)
    return DEFAULT_SEED if value is None else value
