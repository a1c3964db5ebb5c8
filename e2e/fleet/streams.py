"""A bounded load of concurrent chat-completion streams through a Service, sent with the
real ``openai`` client, every stream counted from start to finish.

``streams`` client threads each keep one stream of ``max_tokens`` open at a time
(closed loop: the load is bounded and never piles up on a slow fleet). Each goes to
the Ready address of the Service (from its EndpointSlices, as kube-proxy would route;
nothing routes ClusterIPs here) with the fewest of our streams in flight, so the pods
share them evenly and a pod has some in flight when it is scaled away or replaced.
``open_long(ip, tokens)`` adds one long stream to a chosen pod, at a chosen moment
(one that must outlive that pod's preStop and drain).

A stream is *completed* only when it ended with its ``finish_reason`` and the usage
says every token it asked for came; anything else (an error, a refusal, a stream that
ends early) is *failed*, with the reason.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from openai import OpenAI

from fleet.endpoints import EndpointWatcher


@dataclass
class Stream:
    ip: str
    tokens: int  # asked for
    started: float  # monotonic
    ended: float | None = None
    finish: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.ended is not None and self.error is None


class StreamLoad:
    def __init__(
        self,
        api_client: Any,
        namespace: str,
        service: str,
        *,
        streams: int = 4,
        max_tokens: int = 64,
        model: str = "llama",
        timeout: float = 90,
    ) -> None:
        self.watcher = EndpointWatcher(api_client, namespace, service, interval=0.1)
        self.n, self.max_tokens, self.model, self.timeout = streams, max_tokens, model, timeout
        self.records: list[Stream] = []
        self._lock = threading.RLock()
        self._in_flight: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- the load --------------------------------------------------------------------
    def start(self) -> StreamLoad:
        self.watcher.start()
        for i in range(self.n):
            self._spawn(self._client, f"stream-{i}")
        return self

    def open_long(self, ip: str, tokens: int) -> Stream:
        """One stream of ``tokens`` to ``ip`` now, counted like the others."""
        rec = self._record(ip, tokens)
        self._spawn(lambda: self._client(rec), f"long-{ip}")
        return rec

    def _spawn(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def stop(self) -> None:
        """Start no more streams; let the open ones finish."""
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)
        self.watcher.stop()

    def _record(self, ip: str, tokens: int) -> Stream:
        with self._lock:  # callers that pick hold it already (an RLock)
            self._in_flight[ip] = self._in_flight.get(ip, 0) + 1
            rec = Stream(ip, tokens, time.monotonic())
            self.records.append(rec)
            return rec

    def _pick(self) -> Stream | None:
        with self._lock:
            addrs = self.watcher.addresses
            if not addrs:
                return None
            ip = min(addrs, key=lambda a: (self._in_flight.get(a, 0), a))
            return self._record(ip, self.max_tokens)

    def _client(self, only: Stream | None = None) -> None:
        """Streams one after another until stopped; or just ``only``."""
        clients: dict[str, OpenAI] = {}
        while only is not None or not self._stop.is_set():
            rec = only or self._pick()
            if rec is None:
                time.sleep(0.05)
                continue
            self._run(rec, clients)
            if only is not None:
                break
        for c in clients.values():
            c.close()

    def _run(self, rec: Stream, clients: dict[str, OpenAI]) -> None:
        oai = clients.get(rec.ip)
        if oai is None:
            oai = clients[rec.ip] = OpenAI(
                base_url=f"http://{rec.ip}:8000/v1",
                api_key="none",
                max_retries=0,
                timeout=self.timeout,
            )
        try:
            rec.finish, rec.error = self._one(oai, rec.tokens)
        except Exception as e:  # a refusal, a reset, a timeout: all count as failed
            rec.error = repr(e)[:300]
        rec.ended = time.monotonic()
        with self._lock:
            self._in_flight[rec.ip] -= 1

    def _one(self, oai: OpenAI, max_tokens: int) -> tuple[str | None, str | None]:
        stream = oai.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": "Count the stars."}],
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        finish, tokens = None, None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        if finish != "length" or tokens != max_tokens:
            return finish, f"cut: finish_reason {finish!r}, {tokens} of {max_tokens} tokens"
        return finish, None

    # -- what happened ---------------------------------------------------------------
    def snapshot(self) -> list[Stream]:
        with self._lock:
            return list(self.records)

    def completed_on(self, ip: str, after: float = 0.0) -> int:
        return sum(1 for r in self.snapshot() if r.ip == ip and r.ok and r.started >= after)

    def in_flight_on(self, ip: str, at: float) -> list[Stream]:
        """Streams open on ``ip`` at monotonic time ``at`` (however they ended)."""
        return [
            r
            for r in self.snapshot()
            if r.ip == ip and r.started <= at and (r.ended is None or r.ended > at)
        ]

    def counts(self) -> dict[str, int]:
        recs = self.snapshot()
        return {
            "started": len(recs),
            "completed": sum(r.ok for r in recs),
            "failed": sum(r.error is not None for r in recs),
            "open": sum(r.ended is None for r in recs),
        }

    def failures(self) -> list[str]:
        return [f"{r.ip}: {r.error}" for r in self.snapshot() if r.error is not None]

    def finish_reasons(self) -> set[str | None]:
        return {r.finish for r in self.snapshot() if r.ended is not None}
