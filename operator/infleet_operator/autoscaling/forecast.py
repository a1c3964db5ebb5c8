"""Arrival-rate forecaster: Holt's damped trend on irregular ticks, plus a daily profile.

Why this one: it is O(1) per tick, has two interpretable time constants, and the
damped trend extrapolates a ramp (diurnal rise, marketing step) one pod-start
ahead without running away on noise. The seasonal term only switches on after
a full period of history, and then only adds the profile's change between
now and now + lead; it never replaces the live level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ForecastConfig:
    level_tau_s: float = 20.0  # time constant of the level EWMA
    trend_tau_s: float = 120.0  # time constant of the trend EWMA
    damping_tau_s: float = 600.0  # trend decays as exp(-h / tau) over the horizon
    season_period_s: float = 86400.0  # 0 disables the seasonal term
    season_bucket_s: float = 300.0


class HoltForecaster:
    """Level + damped trend in continuous time (ticks may be irregular)."""

    def __init__(self, config: ForecastConfig | None = None) -> None:
        self.config = config or ForecastConfig()
        self.level: float | None = None
        self.trend = 0.0  # (req/s) per second
        self._t: float | None = None
        self._first_t: float | None = None
        c = self.config
        n = int(c.season_period_s // c.season_bucket_s) if c.season_period_s > 0 else 0
        self._season = [math.nan] * n

    def update(self, t: float, rate: float) -> None:
        c = self.config
        if self.level is None or self._t is None:
            self.level, self._t, self._first_t = rate, t, t
            return
        dt = t - self._t
        if dt <= 0:
            return
        a = 1.0 - math.exp(-dt / c.level_tau_s)
        b = 1.0 - math.exp(-dt / c.trend_tau_s)
        prev = self.level
        predicted = prev + self.trend * dt
        self.level = predicted + a * (rate - predicted)
        self.trend += b * ((self.level - prev) / dt - self.trend)
        self._t = t
        if self._season:
            i = self._bucket(t)
            old = self._season[i]
            self._season[i] = self.level if math.isnan(old) else old + 0.05 * (self.level - old)

    def _bucket(self, t: float) -> int:
        c = self.config
        return int((t % c.season_period_s) // c.season_bucket_s)

    def trend_gain(self, horizon_s: float) -> float:
        """Integral of the damped trend over the horizon (seconds)."""
        tau = self.config.damping_tau_s
        return tau * (1.0 - math.exp(-horizon_s / tau)) if tau > 0 else horizon_s

    def forecast(self, horizon_s: float) -> float:
        """Rate expected ``horizon_s`` from the last update (never negative)."""
        if self.level is None:
            return 0.0
        value = self.level + self.trend * self.trend_gain(horizon_s)
        seasonal = self._seasonal_delta(horizon_s)
        if seasonal is not None:
            value = max(value, self.level + seasonal)
        return max(value, 0.0)

    def _seasonal_delta(self, horizon_s: float) -> float | None:
        c = self.config
        if not self._season or self._t is None or self._first_t is None:
            return None
        if self._t - self._first_t < c.season_period_s:
            return None
        now, ahead = (
            self._season[self._bucket(self._t)],
            self._season[self._bucket(self._t + horizon_s)],
        )
        if math.isnan(now) or math.isnan(ahead):
            return None
        return ahead - now
