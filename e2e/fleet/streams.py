"""A bounded load of concurrent chat-completion streams through a Service, sent with the
real ``openai`` client, every stream counted from start to finish.

``streams`` client threads each keep one stream open at a time (closed loop: the load
is bounded and never piles up on a slow fleet); the first ``long_streams`` of them ask
for ``long_tokens`` (long enough to outlive a pod's preStop and drain), the others
for ``max_tokens``. Each stream goes to the Ready address of the Service (from its
EndpointSlices, as kube-proxy would route; nothing routes ClusterIPs here) with the
fewest of our streams (long ones: of our long streams) in flight, so the pods share
them evenly and a pod has some in flight when it is scaled away or replaced.

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
        long_streams: int = 0,
        long_tokens: int = 0,
        model: str = "llama",
        timeout: float = 90,
    ) -> None:
        self.watcher = EndpointWatcher(api_client, namespace, service, interval=0.1)
        self.n, self.max_tokens, self.model, self.timeout = streams, max_tokens, model, timeout
        self.long_streams, self.long_tokens = long_streams, long_tokens
        self.records: list[Stream] = []
        self._lock = threading.Lock()
        self._in_flight: dict[tuple[str, bool], int] = {}  # (ip, long) -> open streams
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- the load --------------------------------------------------------------------
    def start(self) -> StreamLoad:
        self.watcher.start()
        self._threads = [
            threading.Thread(
                target=self._client,
                args=(self.long_tokens if i < self.long_streams else self.max_tokens,),
                name=f"stream-{i}",
                daemon=True,
            )
            for i in range(self.n)
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Start no more streams; let the open ones finish."""
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)
        self.watcher.stop()

    def _pick(self, tokens: int) -> Stream | None:
        long = tokens != self.max_tokens
        with self._lock:
            addrs = self.watcher.addresses
            if not addrs:
                return None

            def load(a: str) -> tuple[int, int, str]:
                mine = self._in_flight.get((a, long), 0)
                return (mine if long else 0, mine + self._in_flight.get((a, not long), 0), a)

            ip = min(addrs, key=load)
            self._in_flight[(ip, long)] = self._in_flight.get((ip, long), 0) + 1
            rec = Stream(ip, tokens, time.monotonic())
            self.records.append(rec)
            return rec

    def _client(self, tokens: int) -> None:
        clients: dict[str, OpenAI] = {}
        while not self._stop.is_set():
            rec = self._pick(tokens)
            if rec is None:
                time.sleep(0.05)
                continue
            oai = clients.get(rec.ip)
            if oai is None:
                oai = clients[rec.ip] = OpenAI(
                    base_url=f"http://{rec.ip}:8000/v1",
                    api_key="none",
                    max_retries=0,
                    timeout=self.timeout,
                )
            try:
                rec.finish, rec.error = self._one(oai, tokens)
            except Exception as e:  # a refusal, a reset, a timeout: all count as failed
                rec.error = repr(e)[:300]
            rec.ended = time.monotonic()
            with self._lock:
                self._in_flight[(rec.ip, tokens != self.max_tokens)] -= 1
        for c in clients.values():
            c.close()

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

    def fresh_long(self, max_age: float) -> Stream | None:
        """A long stream opened less than ``max_age`` seconds ago and still open."""
        now = time.monotonic()
        for r in reversed(self.snapshot()):
            if r.tokens == self.long_tokens and r.ended is None and now - r.started < max_age:
                return r
        return None

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
