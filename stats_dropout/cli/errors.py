"""The one error a command handler raises for a mistake in the command line."""


class UsageError(Exception):
    """A mistake in the command line; :func:`stats_dropout.cli.main` prints it in one line, exit code 2."""
