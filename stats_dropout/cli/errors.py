"""The one error a command handler raises for a mistake in the command line, and the
``--timeout`` option that ``verify`` and ``verify-model`` share."""

#: Default ``--timeout`` of ``verify`` and ``verify-model``: seconds one call to the code under test
#: may take. Generous (a dropout call on the battery's probe takes milliseconds, a model forward
#: on an example batch seconds at most on a CPU), so that only a hang reaches it.
DEFAULT_TIMEOUT = 60.0

TIMEOUT_HELP = ("seconds one call to the code under test may take; a call that does not return in time fails "
                "its check, naming the call, the implementation is not called again (a hung call cannot be "
                "stopped) and the command exits 1 (default: %(default)s; 0 or none: no limit)")


class UsageError(Exception):
    """A mistake in the command line; :func:`stats_dropout.cli.main` prints it in one line, exit code 2."""


def add_timeout_argument(parser):
    """``--timeout SECONDS`` (a string: read by :func:`timeout_arg`)."""
    parser.add_argument("--timeout", default=f"{DEFAULT_TIMEOUT:g}", metavar="SECONDS", help=TIMEOUT_HELP)


def timeout_arg(args):
    """``args.timeout`` as seconds or None (no limit); a bad value is a :class:`UsageError`.

    A namespace without ``timeout`` (a handler called directly) means no limit.
    """
    from stats_dropout._internal.timeouts import parse_timeout

    value = getattr(args, "timeout", None)
    if value is None:
        return None
    try:
        return parse_timeout(value, "--timeout")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def hang_line(command, guard, timeout):
    """The one line ``command`` prints on stderr after a hang (None if nothing hung)."""
    if guard is None or guard.hung is None:
        return None
    return (f"stats-dropout {command}: FAILED: {guard.hung} (--timeout {timeout:g}); a hung call cannot be "
            "stopped, so nothing more was called and every check from there on failed")
