"""The engine core's shared memory and messages: arena allocation, tensor descriptors,
framing split across reads, merged metrics and statistics."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from infleet_worker.core import wire
from infleet_worker.core.arena import ALIGN, Arena
from infleet_worker.core.merge import merge_metrics, merge_stats
from infleet_worker.tensors import Tensor


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 5000)), min_size=1, max_size=60))
def test_arena_allocations_never_overlap_and_all_space_comes_back(
    ops: list[tuple[bool, int]],
) -> None:
    arena = Arena.create(64 * 1024)
    live: dict[int, int] = {}
    for free_one, size in ops:
        if free_one and live:
            off = sorted(live)[size % len(live)]
            arena.free(off)
            del live[off]
            continue
        off = arena.alloc(size)
        if off is None:
            assert arena.largest_free < -(-size // ALIGN) * ALIGN  # truly no room
            continue
        assert off % ALIGN == 0 and off + size <= arena.size
        for o, n in live.items():
            assert off + size <= o or o + n <= off, "overlap"
        live[off] = size
    for off in list(live):
        arena.free(off)
    assert arena.used == 0 and arena.alloc(64 * 1024) == 0  # one block again
    arena.close()


def test_descriptors_round_trip_through_the_arena_and_inline() -> None:
    arena = Arena.create(4096)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    offsets: list[int] = []
    d = wire.put(arena, "x", Tensor("FP32", x), offsets)
    assert d[3] >= 0 and offsets == [d[3]]
    np.testing.assert_array_equal(wire.get(arena, d).array, x)
    big = np.ones((100, 100), np.float64)  # does not fit: inline, still correct
    d = wire.put(arena, "big", Tensor("FP64", big), [])
    assert d[3] == -1
    np.testing.assert_array_equal(wire.get(arena, d).array, big)
    s = np.array([[b"ab"], [b""]], dtype=object)
    d = wire.put(arena, "s", Tensor("BYTES", s), [])
    assert wire.get(arena, d).array.tolist() == s.tolist()


def test_one_block_per_front_end_holds_every_request_output() -> None:
    arena = Arena.create(1 << 16)
    out = np.arange(20, dtype=np.float32).reshape(5, 4)
    members = [
        {"y": Tensor("FP32", out[0:2]), "n": Tensor("INT64", np.arange(2)[:, None])},
        {"y": Tensor("FP32", out[2:5]), "n": Tensor("INT64", np.arange(3)[:, None])},
    ]
    descs, block = wire.put_block(arena, members)
    assert block == 0 and len(descs) == 2
    for m, ds in zip(members, descs, strict=True):
        for d in ds:
            np.testing.assert_array_equal(wire.get(arena, d).array, m[d[0]].array)
    arena.free(block)
    assert arena.used == 0


def test_frames_split_anywhere_come_out_whole() -> None:
    msgs = [("infer", i, 0, 0, 1, (("x", "FP32", (1, 2), 64 * i, 8, None),)) for i in range(50)]
    data = b"".join(wire.frame(m) for m in msgs)
    d = wire.Deframer()
    got = []
    for cut in range(0, len(data), 7):
        got += d.feed(data[cut : cut + 7])
    assert got == msgs


def test_metrics_and_statistics_sum_over_processes() -> None:
    a = '# HELP c_total x\n# TYPE c_total counter\nc_total{m="a"} 2.0\n'
    b = '# HELP c_total x\n# TYPE c_total counter\nc_total{m="a"} 3.0\nc_created{m="a"} 9.0\n'
    merged = merge_metrics([a, b])
    assert 'c_total{m="a"} 5.0' in merged and "created" not in merged
    s1 = {
        "name": "m",
        "inference_count": 2,
        "last_inference": 5,
        "inference_stats": {"success": {"count": 2, "ns": 10}},
        "batch_stats": [{"batch_size": 2, "compute_infer": {"count": 1, "ns": 4}}],
    }
    s2 = {
        "name": "m",
        "inference_count": 3,
        "last_inference": 7,
        "inference_stats": {"success": {"count": 1, "ns": 5}},
        "batch_stats": [{"batch_size": 2, "compute_infer": {"count": 2, "ns": 6}}],
    }
    doc = merge_stats([s1, s2])
    assert doc["inference_count"] == 5 and doc["last_inference"] == 7 and doc["name"] == "m"
    assert doc["inference_stats"]["success"] == {"count": 3, "ns": 15}
    assert doc["batch_stats"] == [{"batch_size": 2, "compute_infer": {"count": 3, "ns": 10}}]


def test_engine_thread_wakes_the_loop_only_when_the_batch_is_done() -> None:
    """The loop sleeps in select on wake_fd; when it wakes, finished() must say so
    (a wake-up before the result was set once left a pod asleep with requests queued)."""
    import select

    from infleet_worker.core.engine_thread import EngineThread

    t: EngineThread[int, int] = EngineThread()
    try:
        for i in range(300):
            t.start(i, lambda i=i: i * 2)  # type: ignore[misc]
            select.select([t.wake_fd], [], [], 5)
            t.woken()
            done = t.finished()
            assert done is not None and done[0] == i and done[1].result() == 2 * i
            assert not t.busy
    finally:
        t.close()


def test_finished_requests_do_not_keep_their_deadlines(tmp_path: Path) -> None:
    """Every request gets a deadline (30 s by default); once it has run, the core drops
    it within a bounded slack instead of holding request and inputs until it expires
    (3,000 requests here would otherwise all still be in the heap)."""
    from infleet_worker.core.engine_core import DEADLINE_SLACK, Conn, EngineCore
    from infleet_worker.core.state import SharedState
    from worker_engines import IN_FEATURES, MLPEngine
    from worker_fixtures import worker_config

    cfg = worker_config(batching={"maxBatchSize": 16, "maxQueueDelayMicroseconds": 0})
    core = EngineCore(cfg, MLPEngine(), SharedState.create(), tmp_path / "error")
    a, b = socket.socketpair()
    conn = Conn(a, index=0, inputs=Arena.create(1 << 20), outputs=Arena.create(1 << 20))
    x = Tensor("FP32", np.ones((1, IN_FEATURES), np.float32))
    for rid in range(3000):
        offsets: list[int] = []
        desc = wire.put(conn.inputs, "input", x, offsets)
        core._enqueue(conn, ("infer", rid, 0, 0, 1, (desc,)))
        if core.queue.count >= 16:
            core.queue.take(core.queue.head(), time.perf_counter_ns())  # type: ignore[arg-type]
        for off in offsets:
            conn.inputs.free(off)
    assert len(core.deadlines) <= 2 * core.queue.count + DEADLINE_SLACK + 1
    a.close()
    b.close()


def test_a_flush_larger_than_the_socket_buffer_arrives_whole(tmp_path: Path) -> None:
    """The core writes each front end's messages with one non-blocking send; what the
    socket cannot take yet is sent blocking (bounded by SEND_TIMEOUT_S) once the front
    end reads, and the socket is non-blocking again afterwards."""
    import selectors
    import threading

    from infleet_worker.core.engine_core import Conn, EngineCore
    from infleet_worker.core.state import SharedState
    from worker_engines import MLPEngine
    from worker_fixtures import worker_config

    core = EngineCore(worker_config(), MLPEngine(), SharedState.create(), tmp_path / "error")
    a, b = socket.socketpair()
    a.setblocking(False)
    conn = Conn(a, index=0)
    core.sel.register(a, selectors.EVENT_READ, conn)
    payload = np.random.default_rng(0).bytes(8 << 20)  # far past a socketpair's buffer
    conn.out += payload
    received = bytearray()

    def read_late() -> None:
        time.sleep(0.2)
        while len(received) < len(payload):
            received.extend(b.recv(1 << 20))

    reader = threading.Thread(target=read_late, daemon=True)
    reader.start()
    core._flush()
    reader.join(timeout=10)
    assert bytes(received) == payload
    assert not conn.closed and not conn.out
    assert a.getblocking() is False
    a.close()
    b.close()
