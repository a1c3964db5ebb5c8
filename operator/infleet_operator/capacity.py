"""A generative fleet's capacity for ``status.generation``, read from its pods' /metrics.

The generation worker sets two gauges once, after warm-up and before it turns Ready
(docs/generation.md, "Metrics"): ``infleet_generate_kv_capacity_tokens`` (KV blocks x
block size) and ``infleet_generate_context_length_tokens`` (the context it serves).
They never change during a pod's life, so each Ready pod is scraped once, and again
only while its scrape fails (a few tries). The operator does not re-derive either
figure from the spec: the pool is sized from the memory the pod finds at start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from infleet_operator import api, children
from infleet_operator.generation import generates
from infleet_operator.scaler.scrape import fetch_text

log = logging.getLogger(__name__)

Obj = dict[str, Any]
KV_CAPACITY = "infleet_generate_kv_capacity_tokens"
CONTEXT_LENGTH = "infleet_generate_context_length_tokens"
SCRAPE_TIMEOUT_S = 2.0
MAX_TRIES = 10  # per pod; a pod that never answers is left out (status keeps the last figures)


@dataclass(frozen=True, slots=True)
class PodCapacity:
    kv_capacity_tokens: int
    context_length: int


def parse_capacity(text: str) -> PodCapacity | None:
    """Both gauges from a worker's metrics page; None when either is missing (a
    single-pass worker, or one from before the gauges existed)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (KV_CAPACITY, CONTEXT_LENGTH):
                values[sample.name] = sample.value
    if KV_CAPACITY not in values or CONTEXT_LENGTH not in values:
        return None
    return PodCapacity(int(values[KV_CAPACITY]), int(values[CONTEXT_LENGTH]))


def _ready(pod: Obj) -> bool:
    md, st = pod.get("metadata") or {}, pod.get("status") or {}
    if md.get("deletionTimestamp") or not st.get("podIP"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []
    )


def summarize(pods: list[Obj], known: Mapping[str, PodCapacity]) -> Obj | None:
    """``status.generation`` from the newest Ready pod that reported: during a rolling
    update that is a pod of the new spec, so the figures follow the spec's change."""
    reported = [p for p in pods if _ready(p) and p["metadata"].get("name") in known]
    if not reported:
        return None
    newest = max(reported, key=lambda p: str(p["metadata"].get("creationTimestamp") or ""))
    cap = known[newest["metadata"]["name"]]
    return {"kvCapacityTokens": cap.kv_capacity_tokens, "contextLength": cap.context_length}


async def scrape(session: aiohttp.ClientSession, url: str, timeout_s: float) -> PodCapacity | None:
    text = await fetch_text(session, url, timeout_s)
    if text is None:
        return None
    try:
        return parse_capacity(text)
    except ValueError as exc:
        log.info("capacity scrape %s: %s", url, exc)
        return None


@dataclass
class CapacityCache:
    """Per owner: what each pod reported, and how often a pod's scrape failed."""

    timeout_s: float = SCRAPE_TIMEOUT_S
    port: int | None = None  # None: the spec's metrics port (tests serve elsewhere)
    known: dict[Any, dict[str, PodCapacity]] = field(default_factory=dict)
    tries: dict[Any, dict[str, int]] = field(default_factory=dict)

    async def update(
        self, key: Any, spec: api.InferenceDeploymentSpec | None, pods: list[Obj]
    ) -> bool:
        """Scrape the Ready pods not read yet; True when one should be tried again."""
        if spec is None or not generates(spec):
            self.forget(key)
            return False
        port = self.port or children.server_spec(spec).metrics_port
        known = self.known.setdefault(key, {})
        tries = self.tries.setdefault(key, {})
        names = {str(p["metadata"].get("name")) for p in pods}
        for gone in [n for n in known if n not in names]:
            del known[gone]
        for gone in [n for n in tries if n not in names]:
            del tries[gone]
        todo = {
            str(p["metadata"]["name"]): str(p["status"]["podIP"])
            for p in pods
            if _ready(p)
            and p["metadata"].get("name") not in known
            and tries.get(p["metadata"].get("name"), 0) < MAX_TRIES
        }
        if not todo:
            return False
        async with aiohttp.ClientSession() as session:
            results = await asyncio.gather(
                *(
                    scrape(session, f"http://{ip}:{port}/metrics", self.timeout_s)
                    for ip in todo.values()
                )
            )
        retry = False
        for name, cap in zip(todo, results, strict=True):
            if cap is None:
                tries[name] = tries.get(name, 0) + 1
                retry = retry or tries[name] < MAX_TRIES
            else:
                known[name] = cap
        return retry

    def summary(self, key: Any, pods: list[Obj]) -> Obj | None:
        return summarize(pods, self.known.get(key, {}))

    def forget(self, key: Any) -> None:
        self.known.pop(key, None)
        self.tries.pop(key, None)
