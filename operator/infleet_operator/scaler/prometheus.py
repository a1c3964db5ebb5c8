"""Read worker metrics from Prometheus instead of scraping pods (spec.autoscaling.metrics).

Per-pod instant vectors of the same series the pod scrape reads, so the same
observer turns them into rates. Requires Prometheus to keep the ``namespace``
and ``pod`` labels (the chart's ServiceMonitor does).

A scrape gap is missing, never zero: Prometheus down or failing answers every pod
missing; a pod whose newest sample is older than ``STALE_AFTER_S`` is missing; and
rates use each sample's own timestamp, so an instant query that returns the same
(not yet refreshed, or frozen) sample again gives no rate rather than a zero rate.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from infleet_operator.scaler.samples import (
    GENERATE_SERIES,
    SERVED_OUTCOMES,
    WorkerSample,
    generation_sample,
)

log = logging.getLogger(__name__)

_SERIES = {
    "queue_depth": "sum by (pod) (infleet_queue_depth{{{sel}}})",
    "inflight": "sum by (pod) (infleet_inflight_requests{{{sel}}})",
    "arrivals_total": "sum by (pod) (infleet_request_arrivals_total{{{sel}}})",
    "served_total": 'sum by (pod) (infleet_requests_total{{{sel},outcome=~"{served}"}})',
    # The newest arrivals sample per pod, only when fresher than STALE_AFTER_S.
    "sample_time": "max by (pod) (timestamp(infleet_request_arrivals_total{{{sel}}}))"
    " > time() - {stale}",
}
STALE_AFTER_S = 60


def queries(namespace: str, pods: list[str], generative: bool = False) -> dict[str, str]:
    """Field -> PromQL; ``generative`` adds the generation series, keyed by series name."""
    sel = f'namespace="{namespace}",pod=~"{"|".join(pods)}"'
    served = "|".join(sorted(SERVED_OUTCOMES))
    out = {
        field: q.format(sel=sel, served=served, stale=STALE_AFTER_S) for field, q in _SERIES.items()
    }
    if generative:
        out.update({name: f"sum by (pod) ({name}{{{sel}}})" for name in GENERATE_SERIES})
    return out


def per_pod(result: dict[str, Any]) -> dict[str, float]:
    """``{pod: value}`` from a Prometheus instant-query response body."""
    if result.get("status") != "success":
        raise ValueError(f"prometheus error: {result.get('error', result)}")
    out = {}
    for item in result["data"]["result"]:
        out[item["metric"].get("pod", "")] = float(item["value"][1])
    return out


def assemble(
    pods: list[str], values: dict[str, dict[str, float]]
) -> dict[str, WorkerSample | None]:
    samples: dict[str, WorkerSample | None] = {}
    for pod in pods:
        needed = ("queue_depth", "inflight", "arrivals_total", "sample_time")
        if not all(pod in values.get(f, {}) for f in needed):
            samples[pod] = None  # missing, never zero
            continue
        samples[pod] = WorkerSample(
            queue_depth=values["queue_depth"][pod],
            inflight=values["inflight"][pod],
            arrivals_total=values["arrivals_total"][pod],
            served_total=values.get("served_total", {}).get(pod, 0.0),
            ready=True,
            time=values["sample_time"][pod],
            generation=generation_sample(
                {name: values[name][pod] for name in GENERATE_SERIES if pod in values.get(name, {})}
            ),
        )
    return samples


async def scrape_prometheus(
    url: str, namespace: str, targets: dict[str, str], timeout_s: float, generative: bool = False
) -> dict[str, WorkerSample | None]:
    pods = sorted(targets)
    if not pods:
        return {}
    qs = queries(namespace, pods, generative)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s:

            async def one(q: str) -> dict[str, float]:
                async with s.get(f"{url.rstrip('/')}/api/v1/query", params={"query": q}) as r:
                    return per_pod(await r.json())

            results = await asyncio.gather(*(one(q) for q in qs.values()))
    except (TimeoutError, aiohttp.ClientError, ValueError, KeyError) as exc:
        log.info("prometheus query failed: %s", exc or type(exc).__name__)
        return dict.fromkeys(pods)
    return assemble(pods, dict(zip(qs, results, strict=True)))
