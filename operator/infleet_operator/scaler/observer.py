"""Turn per-pod scrapes into one fleet Observation, with rates from counter deltas.

Rates need two scrapes of the same pod. A pod seen for the first time has just
become Ready (only Ready pods are scraped): it contributes its gauges and a rate
of zero until its next scrape, since it carried no traffic before; its share is
not extrapolated from the others, which would add a whole replica's rate at the
tick after every scale-up (a spike predictive would answer with more replicas).
A pod whose counters went backwards (a restart) has no rate this tick and is
extrapolated from the others. A failed scrape is *missing*, never zero: pods
that failed are extrapolated from the ones that answered, and the tick is marked
partial so the actuator refuses to scale down on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infleet_operator.autoscaling.observations import Observation
from infleet_operator.autoscaling.tokens import TokenLoad, TokenSignal
from infleet_operator.scaler.samples import WorkerSample


@dataclass(slots=True)
class _Seen:
    time: float
    sample: WorkerSample


@dataclass(frozen=True, slots=True)
class FleetView:
    observation: Observation
    reported: int  # pods that answered
    expected: int  # pods scraped
    partial: bool  # some pods did not answer


@dataclass
class FleetObserver:
    """Keeps the previous scrape per pod; one instance per InferenceDeployment."""

    tokens: TokenSignal | None = None  # a generative fleet: observe its token load
    _last: dict[str, _Seen] = field(default_factory=dict)

    def observe(
        self,
        now: float,
        samples: dict[str, WorkerSample | None],
        current_replicas: int,
        ready_replicas: int,
    ) -> FleetView:
        answered = {pod: s for pod, s in samples.items() if s is not None}
        arrival_rate = 0.0
        served_rate = 0.0
        token_rate = 0.0
        rated = 0
        joined = 0  # first seen: just Ready, a rate of zero (not extrapolated onto)
        for pod, sample in answered.items():
            prev = self._last.get(pod)
            taken = now if sample.time is None else sample.time
            if prev is None:
                joined += 1
            elif taken > prev.time:
                d_arr = sample.arrivals_total - prev.sample.arrivals_total
                d_srv = sample.served_total - prev.sample.served_total
                d_tok = _generated(sample) - _generated(prev.sample)
                if d_arr >= 0 and d_srv >= 0 and d_tok >= 0:
                    dt = taken - prev.time
                    arrival_rate += d_arr / dt
                    served_rate += d_srv / dt
                    token_rate += d_tok / dt
                    rated += 1
            self._last[pod] = _Seen(taken, sample)
        for pod in list(self._last):
            if pod not in samples:  # pod is gone
                del self._last[pod]

        expected = len(samples)
        if not answered or rated == 0:
            obs = Observation(
                time=now,
                current_replicas=current_replicas,
                ready_replicas=ready_replicas,
                queue_depth=_sum_or_none(answered, "queue_depth", expected),
                in_flight=_sum_or_none(answered, "running", expected),
                missing=True,
            )
            return FleetView(obs, len(answered), expected, partial=True)

        # Extrapolate the pods that did not answer (or have no rate this tick) from those that
        # did; the pods that just joined count as zero.
        gauge_scale = expected / len(answered)
        rate_scale = (expected - joined) / rated
        if self.tokens is not None:
            load = _token_load(
                answered, gauge_scale, arrival_rate * rate_scale, token_rate * rate_scale
            )
            if load is None:  # a pod without the generation series: not a token count
                obs = Observation(now, current_replicas, ready_replicas, missing=True)
                return FleetView(obs, len(answered), expected, partial=True)
            obs = self.tokens.observation(now, current_replicas, ready_replicas, load)
            return FleetView(obs, len(answered), expected, len(answered) < expected)
        obs = Observation(
            time=now,
            current_replicas=current_replicas,
            ready_replicas=ready_replicas,
            queue_depth=sum(s.queue_depth for s in answered.values()) * gauge_scale,
            in_flight=sum(s.running for s in answered.values()) * gauge_scale,
            arrival_rate=arrival_rate * rate_scale,
            completion_rate=served_rate * rate_scale,
        )
        return FleetView(obs, len(answered), expected, partial=len(answered) < expected)


def _sum_or_none(answered: dict[str, WorkerSample], attr: str, expected: int) -> float | None:
    if not answered:
        return None
    return sum(getattr(s, attr) for s in answered.values()) * expected / len(answered)


def _generated(sample: WorkerSample) -> float:
    return sample.generation.generated_total if sample.generation is not None else 0.0


def _token_load(
    answered: dict[str, WorkerSample], scale: float, arrival_rate: float, token_rate: float
) -> TokenLoad | None:
    """Gauges summed (and extrapolated like the request gauges); None if a pod lacks them."""
    gens = [s.generation for s in answered.values()]
    if any(g is None for g in gens):
        return None
    done = [g for g in gens if g is not None]
    finished = sum(g.finished_total for g in done)
    return TokenLoad(
        waiting=sum(g.waiting for g in done) * scale,
        running=sum(g.running for g in done) * scale,
        kv_blocks_used=sum(g.kv_blocks_used for g in done),
        kv_blocks=sum(g.kv_blocks for g in done),
        arrival_rate=arrival_rate,
        token_rate=token_rate,
        # Since each pod started: steadier than one interval's few finished sequences.
        tokens_per_sequence=sum(g.generated_total for g in done) / finished if finished else None,
    )
