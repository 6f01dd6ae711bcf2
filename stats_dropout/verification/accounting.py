"""What a battery spends inside the implementation: its calls, counted and timed.

The battery's cost is the implementation's own calls plus the work around them (screening,
accumulating, deciding). :class:`CallLedger` wraps the implementation's ``train``, ``eval`` and
``backward`` (:meth:`Implementation.counted <stats_dropout.verification.implementation.Implementation.counted>`)
and adds up each call's wall time, so a result can say how much of its time was the
implementation's (:class:`~stats_dropout.inference.verdicts.BatteryCost`).
"""

from __future__ import annotations

import collections
import functools
import time

__all__ = ["CallLedger"]


class CallLedger:
    """Counts and times calls, per role (``"train"``, ``"eval"``, ``"backward"``).

    Attributes
    ----------
    calls : collections.Counter
        Calls per role.
    seconds : collections.Counter
        Wall seconds inside the calls, per role (``time.perf_counter``).
    """

    def __init__(self):
        self.calls = collections.Counter()
        self.seconds = collections.Counter()

    def wrap(self, fn, role):
        """``fn`` counted and timed under ``role`` (None stays None); name and signature kept."""
        if fn is None:
            return None

        @functools.wraps(fn)
        def counted(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:  # a call that raises took its time too
                self.seconds[role] += time.perf_counter() - start
                self.calls[role] += 1

        return counted

    @property
    def total_calls(self):
        return sum(self.calls.values())

    @property
    def total_seconds(self):
        return float(sum(self.seconds.values()))
