"""When the autoscaler decides: a fixed grid of decision instants (no kopf, so tests
and the simulator can use it without registering the operator's timer)."""

from __future__ import annotations

TIMER_SECONDS = 1.0  # wake-up period; each object ticks at its own spec.autoscaling.intervalSeconds


def decision_due(last: float | None, now: float, period: float) -> float | None:
    """The grid instant of the decision due at ``now``, or None: not due yet.

    Decisions sit on a grid of ``period`` seconds from the first one. The
    (sharp) timer wakes every TIMER_SECONDS, and its wakes walk across the grid
    (kopf restarts its own grid from each wake, a few ms late every time, so they
    drift through a whole TIMER_SECONDS in a minute or two): the wake in the
    TIMER_SECONDS before a grid instant takes it, and the timer waits for the
    instant itself (:func:`wait_s`) before it reads the metrics. Deciding at the
    wake instead put the decisions up to half a wake early or late, a walk the
    simulator's fixed clock does not have. Counting each period from the previous
    wake, before that, made every period late by a wake's slip.
    """
    if last is None:
        return now
    due = last + period
    if now < due - TIMER_SECONDS:
        return None
    return due if now - due < period else now  # after a stall, a new grid from now


def wait_s(due: float, now: float) -> float:
    """How long to wait from ``now`` for the grid instant ``due`` (0 when it has passed)."""
    return max(0.0, due - now)
