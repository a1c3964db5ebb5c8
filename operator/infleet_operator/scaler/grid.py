"""When the autoscaler decides: a fixed grid of decision instants (no kopf, so tests
and the simulator can use it without registering the operator's timer)."""

from __future__ import annotations

TIMER_SECONDS = 1.0  # wake-up period; each object ticks at its own spec.autoscaling.intervalSeconds


def decision_due(last: float | None, now: float, period: float) -> float | None:
    """The grid instant of the decision due at ``now``, or None: not due yet.

    Decisions sit on a grid of ``period`` seconds from the first one, and the
    (sharp) timer wakes every TIMER_SECONDS: a wake within half of that of a grid
    instant takes it. Counting each period from the previous decision's wake
    instead, as before, made every period late by a wake's slip (2 s decisions
    came every 2.09 s), so the operator drifted off the simulator's clock.
    """
    if last is None:
        return now
    due = last + period
    if now < due - TIMER_SECONDS / 2:
        return None
    return due if now - due < period else now  # after a stall, a new grid from now
