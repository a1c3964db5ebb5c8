"""Scrape every worker pod's /metrics in parallel, each with its own timeout."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from infleet_operator.scaler.samples import MetricsParseError, WorkerSample, parse_worker_metrics

log = logging.getLogger(__name__)


async def fetch_text(session: aiohttp.ClientSession, url: str, timeout_s: float) -> str | None:
    """One GET of a pod's /metrics; None (logged) when it fails or times out."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                log.info("scrape %s: HTTP %s", url, resp.status)
                return None
            return await resp.text()
    except (TimeoutError, aiohttp.ClientError) as exc:
        log.info("scrape %s failed: %s", url, exc or type(exc).__name__)
        return None


async def scrape_one(
    session: aiohttp.ClientSession, url: str, timeout_s: float
) -> WorkerSample | None:
    text = await fetch_text(session, url, timeout_s)
    if text is None:
        return None
    try:
        return parse_worker_metrics(text)
    except MetricsParseError as exc:
        log.info("scrape %s: %s", url, exc)
        return None


async def scrape_pods(
    targets: dict[str, str], port: int, timeout_s: float
) -> dict[str, WorkerSample | None]:
    """``targets`` maps pod name -> pod IP; a pod that fails maps to None (missing)."""
    if not targets:
        return {}
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(
                scrape_one(session, f"http://{ip}:{port}/metrics", timeout_s)
                for ip in targets.values()
            )
        )
    return dict(zip(targets, results, strict=True))
