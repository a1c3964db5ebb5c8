"""The encoder fleet's requests: queues over the arrival array, drawn in batches by replicas.

Requests are not events. Arrivals are a sorted array known up front, so a
replica that frees up computes when its next batch starts (oldest request +
max queue delay, or the moment the batch fills) and how many it takes with a
bisect. Cost per simulated day is the number of batches, not requests.
Least-queue shares one stride-1 queue among all replicas; round-robin gives each
replica its own queue of every n-th request, re-dealt whenever the set of serving
replicas changes.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from heapq import heappush

import numpy as np

from infleet_operator.simulator.events import EventQueue
from infleet_operator.simulator.fleet_config import FleetConfig
from infleet_operator.simulator.pods import DRAINING, SERVING, Pod
from infleet_operator.simulator.service import service_times
from infleet_operator.simulator.shedding import Shedder, assign_priorities
from infleet_operator.simulator.streams import Stream, expand

INF = math.inf


class Replica(Pod):
    __slots__ = ("batcher", "busy", "rid")

    def __init__(self, rid: int, created: float) -> None:
        super().__init__(created)
        self.rid, self.busy = rid, 0
        self.batcher: Batcher | None = None


class Batcher:
    """A queue (stream) and the idle replicas that draw batches from it."""

    __slots__ = ("idle", "stream", "version")

    def __init__(self) -> None:
        self.stream, self.idle, self.version = Stream(), list[Replica](), 0


class Batching:
    """Who serves which request when: batches and drops, recorded as strided ranges."""

    def __init__(self, arrivals: list[float], cfg: FleetConfig, events: EventQueue) -> None:
        self.cfg = c = cfg
        self.arr, self.n, self.events = arrivals, len(arrivals), events
        self.svc = service_times(c.service_table, max(c.max_batch, c.overload_max_batch))
        self.n_serving = 0
        self.priorities = (
            assign_priorities(self.n, c.priority_shares, c.seed) if c.priority_shares else None
        )
        self.shedder: Shedder | None = None
        if c.shed_queue_per_replica > 0 and self.priorities is not None:
            if c.lb != "least-queue":
                raise ValueError("priority shedding is modelled for lb least-queue only")
            self.shedder = Shedder(self.priorities, c.shed_queue_per_replica)
        self.shared = Batcher() if c.lb == "least-queue" else None
        if self.shared is not None:
            self.shared.stream.add(0, self.n, 1)
        self.batches: list[list[int]] = [[], [], []]
        self.batch_done: list[float] = []
        self.drops: list[list[int]] = [[], [], []]
        self.inflight = self.completed = 0
        self._orphan_from: int | None = None  # round-robin with no serving replica
        # Bound once: a bound method made per event would be garbage the collector chases.
        self._on_done, self._on_dispatch = self._done, self._dispatch

    # -- replicas joining and leaving ---------------------------------------------------
    def attach(self, r: Replica, replicas: Sequence[Replica], now: float) -> None:
        """A replica turned Ready: it joins the shared queue, or gets its own."""
        if self.shared is not None:
            r.batcher = self.shared
            self.shared.idle.append(r)
            self._kick(self.shared, now)
        else:
            r.batcher = Batcher()
            r.batcher.idle.append(r)
            self.rebalance(replicas, now)

    def drain(self, r: Replica, now: float) -> bool:
        """A serving replica takes no new batch; True when the queues need re-dealing."""
        b = r.batcher
        assert b is not None
        if self.shared is None:
            return True
        if r in b.idle:
            b.idle.remove(r)
            r.retire(now)
        return False

    def rebalance(self, replicas: Sequence[Replica], now: float) -> None:
        """Round-robin: start a new epoch of stride-n segments over serving replicas."""
        g = bisect_right(self.arr, now)
        serving = [r for r in replicas if r.state == SERVING]
        for r in replicas:
            if r.batcher is not None and r.state in (SERVING, DRAINING):
                r.batcher.stream.close(g)
        for k, r in enumerate(serving):
            assert r.batcher is not None
            r.batcher.stream.add(g + k, self.n, len(serving))
        if self._orphan_from is not None:  # requests that met no endpoint fail
            self._drop_range(self._orphan_from, g)
            self._orphan_from = None
        if not serving:
            self._orphan_from = g
        for r in replicas:
            if r.batcher is not None and r.state in (SERVING, DRAINING) and not r.busy:
                self._kick(r.batcher, now)

    def _drop_range(self, start: int, stop: int) -> None:
        if stop > start:
            self.drops[0].append(start)
            self.drops[1].append(stop - start)
            self.drops[2].append(1)

    # -- batching -----------------------------------------------------------------------
    def _plan(self, s: Stream, now: float) -> float:
        """When the next batch of this stream starts (max queue delay or full batch)."""
        i0 = s.nth(0, self.n)
        if i0 < 0:
            return INF
        t = self.arr[i0] + self.cfg.max_queue_delay_s
        ib = s.nth(self.cfg.max_batch - 1, self.n)
        if ib >= 0 and self.arr[ib] < t:
            t = self.arr[ib]
        return t if t > now else now

    def _dispatch(self, due: tuple[Batcher, int], now: float) -> None:
        b, version = due
        if version == b.version:
            self._kick(b, now)

    def _kick(self, b: Batcher, now: float) -> None:
        if b is self.shared:
            self._kick_shared(b, now)
            return
        b.version += 1
        while b.idle:
            at = self._plan(b.stream, now)
            if at == INF:
                break
            if at > now:
                self.events.push(at, self._on_dispatch, (b, b.version))
                return
            r = b.idle.pop()
            if not self._start(r, b.stream, now):
                b.idle.append(r)
        for r in list(b.idle):  # draining replicas with nothing left leave
            if r.state == DRAINING and (self.shared is not None or b.stream.exhausted(self.n)):
                b.idle.remove(r)
                r.retire(now)

    def _kick_shared(self, b: Batcher, now: float) -> None:
        """`_kick` for the one stride-1 shared queue, inlined: the hot loop of least-queue."""
        b.version += 1
        idle, arr, n, seg = b.idle, self.arr, self.n, b.stream.segs[0]
        c = self.cfg
        delay, full, timeout = c.max_queue_delay_s, c.max_batch, c.request_timeout_s
        starts, counts, strides = self.batches
        boost = c.overload_max_batch > c.max_batch
        shed = self.shedder
        events, on_done = self.events, self._on_done
        while idle:
            head = seg[0]
            if shed is not None and head < n:
                shed.admit(arr, now, head, self.n_serving)
                head = seg[0] = shed.skip(head)
            if head >= n:
                return
            if boost:
                waiting = bisect_right(arr, now, head) - head
                over = waiting > c.overload_queue_per_replica * max(self.n_serving, 1)
                full = c.overload_max_batch if over else c.max_batch
                delay = c.overload_queue_delay_s if over else c.max_queue_delay_s
            at = arr[head] + delay
            j = head + full - 1
            if j < n and arr[j] < at:
                at = arr[j]
            if at > now:
                events.push(at, self._on_dispatch, (b, b.version))
                return
            if arr[head] < now - timeout:
                cut = bisect_left(arr, now - timeout, head)
                self._drop_range(head, cut)
                seg[0] = head = cut
                if head >= n or arr[head] > now:
                    continue
            if shed is not None:
                size, seg[0] = shed.take(head, bisect_right(arr, now, head), full, self.batches)
                if not size:
                    continue
                done = now + self.svc[size]
                self.batch_done.extend([done] * (len(starts) - len(self.batch_done)))
            else:
                g = bisect_right(arr, now, head, min(n, head + full))
                size = g - head
                seg[0] = g
                starts.append(head)
                counts.append(size)
                strides.append(1)
                done = now + self.svc[size]
                self.batch_done.append(done)
            r = idle.pop()
            r.busy = size
            self.inflight += size
            events.seq += 1  # events.push, inlined
            heappush(events.heap, (done, events.seq, on_done, r))

    def _start(self, r: Replica, s: Stream, now: float) -> bool:
        arr = self.arr
        i0 = s.nth(0, self.n)
        cutoff = now - self.cfg.request_timeout_s
        if arr[i0] < cutoff:
            s.take(self.n, bisect_left(arr, cutoff, i0), self.drops)
            i0 = s.nth(0, self.n)
            if i0 < 0 or arr[i0] > now:
                return False
        g = bisect_right(arr, now, i0)
        size = s.take(self.cfg.max_batch, g, self.batches)
        if not size:
            return False
        done = now + self.svc[size]
        self.batch_done.extend([done] * (len(self.batches[0]) - len(self.batch_done)))
        r.busy = size
        self.inflight += size
        self.events.push(done, self._on_done, r)
        return True

    def _done(self, r: Replica, now: float) -> None:
        self.inflight -= r.busy
        self.completed += r.busy
        r.busy = 0
        b = r.batcher
        assert b is not None
        if r.state == DRAINING and self.shared is not None:
            r.retire(now)
            return
        b.idle.append(r)
        self._kick(b, now)

    # -- what the metrics and the result read ---------------------------------------------
    def waiting(self, g: int, replicas: Sequence[Replica]) -> int:
        """Requests among the first ``g`` arrivals that wait for a batch."""
        if self.shared is not None:
            waiting = self.shared.stream.count_before(g)
            if self.shedder is not None:
                waiting -= self.shedder.pending(self.shared.stream.segs[0][0])
            return waiting
        return sum(
            r.batcher.stream.count_before(g)
            for r in replicas
            if r.batcher is not None and r.state in (SERVING, DRAINING)
        )

    def outcome(self, arrivals: np.ndarray) -> tuple[np.ndarray, int, int, np.ndarray | None]:
        """Once the run is over: (latency per request, completed, timed out, refused)."""
        if self._orphan_from is not None:
            self._drop_range(self._orphan_from, self.n)
        done = np.full(self.n, np.nan)
        idx = expand(self.batches)
        counts = np.asarray(self.batches[1], dtype=np.int64)
        done[idx] = np.repeat(np.asarray(self.batch_done), counts)
        dropped = expand(self.drops)
        refused = self.shedder.mask() if self.shedder is not None else None
        timed_out = len(dropped) - (int(refused[dropped].sum()) if refused is not None else 0)
        return done - arrivals, len(idx), timed_out, refused
