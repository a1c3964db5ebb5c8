"""The simulator's generative replica: step times from the profile, KV capacity, the
CSV's token columns, and `infleet simulate -f` on the example generate manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from infleet_operator.api import AutoscalingSpec
from infleet_operator.autoscaling.spec import ControlLoop, loop_settings
from infleet_operator.autoscaling.tokens import TokenSignal
from infleet_operator.cli import main as infleet
from infleet_operator.simulator.gen_fleet import GenFleetConfig, simulate_generation
from infleet_operator.simulator.gen_profile import GenerateProfile
from infleet_operator.simulator.gen_replica import EngineLimits, GenReplica
from infleet_operator.simulator.profile import Profile, load_profile
from infleet_operator.simulator.traces import Trace, load_csv

ROOT = Path(__file__).resolve().parent.parent
LLAMA = str(ROOT / "manifests" / "examples" / "llama-generate.yaml")
PROFILE = GenerateProfile(((1, 0.010), (4, 0.012)), 1e-4, 4096, 16)


def _fixed(n: int = 1) -> ControlLoop:
    auto = AutoscalingSpec(enabled=True, policy="hpa", min_replicas=n, max_replicas=n)
    return ControlLoop(loop_settings(auto, 1.0, TokenSignal()))


def _burst(n: int, prompt: int, output: int, at: float = 0.0) -> Trace:
    arr = np.full(n, at) + np.arange(n) * 1e-6
    full = np.full(n, 1)
    return Trace("burst", arr, np.zeros(60), 60.0, full * prompt, full * output)


def test_decode_table_interpolates_and_extends() -> None:
    assert PROFILE.decode_seconds(1) == 0.010
    assert PROFILE.decode_seconds(2) == pytest.approx(0.010 + 0.002 / 3)
    assert PROFILE.decode_seconds(7) == pytest.approx(0.012 + 3 * 0.002 / 3)
    assert PROFILE.step_seconds(4, 100) == pytest.approx(0.012 + 0.01)


def test_one_sequence_matches_the_step_model() -> None:
    cfg = GenFleetConfig(profile=PROFILE, limits=EngineLimits(max_running=4))
    r = simulate_generation(_burst(1, 32, 50), _fixed(), cfg).generation
    assert r is not None and r.tokens == 50
    ttft = 0.010 + 32 * 1e-4  # one prefill step; it samples the first token
    assert r.ttft_ms[0] == pytest.approx(ttft * 1000)
    assert r.itl_ms[0] == pytest.approx(10.0)  # 49 decode steps of one sequence
    assert r.e2e_ms[0] == pytest.approx((ttft + 49 * 0.010) * 1000)


def test_batch_of_four_decodes_together() -> None:
    cfg = GenFleetConfig(profile=PROFILE, limits=EngineLimits(max_running=4))
    r = simulate_generation(_burst(8, 16, 100), _fixed(), cfg)
    g = r.generation
    assert g is not None and g.tokens == 800 and r.completed == 8
    # two waves of 4: prefill (4 x 16 tokens) + 99 decode steps of 4 each
    wave = 0.010 + 64 * 1e-4 + 99 * 0.012
    assert g.tokens_per_second == pytest.approx(800 / (2 * wave), rel=0.01)


def test_kv_capacity_makes_sequences_wait() -> None:
    small = GenerateProfile(((1, 0.010), (4, 0.012)), 1e-4, 16 * 8, 16)  # 8 blocks of 16
    limits = EngineLimits(max_running=4)
    r = simulate_generation(_burst(4, 48, 10), _fixed(), GenFleetConfig(small, limits))
    g = r.generation
    assert g is not None and r.completed == 4 and g.tokens == 40
    # 48-token prompts take 3 blocks each: two run, two wait for their blocks
    roomy = simulate_generation(_burst(4, 48, 10), _fixed(), GenFleetConfig(PROFILE, limits))
    assert roomy.generation is not None
    assert g.tokens_per_second < 0.7 * roomy.generation.tokens_per_second
    assert g.ttft_ms[2] > 3 * roomy.generation.ttft_ms[2]


def test_autoscaler_adds_replicas_on_token_load() -> None:
    rng = np.random.default_rng(1)
    n = 9000  # 15 sequences/s x 100 tokens: about two replicas' worth
    arr = np.sort(rng.uniform(0, 600, n))
    trace = Trace("t", arr, np.full(600, n / 600), 600.0, np.full(n, 64), np.full(n, 100))
    auto = AutoscalingSpec(enabled=True, policy="predictive", max_replicas=20, interval_seconds=5)
    loop = ControlLoop(loop_settings(auto, 10.0, TokenSignal()))
    cfg = GenFleetConfig(profile=PROFILE, start_delay_s=10.0, tick_s=5, scrape_interval_s=5)
    r = simulate_generation(trace, loop, cfg)
    assert r.scale_actions > 0 and r.ticks[:, 2].max() >= 2
    assert r.completed + r.timed_out <= n and r.completed > 0.9 * n


def test_csv_token_columns(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("timestamp,prompt_tokens,output_tokens\n2.5,10,20\n1.0,30,40\n")
    t = load_csv(f)
    assert t.arrivals.tolist() == [0.0, 1.5]
    assert t.prompt_tokens is not None and t.prompt_tokens.tolist() == [30, 10]
    assert t.output_tokens is not None and t.output_tokens.tolist() == [40, 20]


def test_profile_round_trip(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_text(Profile(generate=PROFILE, source="test").to_json())
    assert load_profile(f).generate == PROFILE


def test_simulate_the_example_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "gen.csv"
    rows = [f"{i * 0.05:.2f},{16 + i % 50},{20 + i % 30}" for i in range(1200)]
    trace.write_text("timestamp,prompt_tokens,output_tokens\n" + "\n".join(rows) + "\n")
    prof = tmp_path / "p.json"
    prof.write_text(Profile(generate=PROFILE, source="test", pod_start_seconds=20).to_json())
    args = ["simulate", "-f", LLAMA, "--trace", str(trace), "--profile", str(prof)]
    assert infleet(args) == 0
    out = capsys.readouterr().out
    assert "autoscaling off: spec.replicas=1 fixed" in out and "SLO att." in out
    assert "tokens/s" in out and "time to first token" in out and "inter-token latency" in out
    on = ["--set", "autoscaling.enabled=true", "--set", "autoscaling.policy=kpa", "--json"]
    assert infleet([*args, *on]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["policy"] == "kpa" and data["generation"]["tokens"] > 0


def test_decode_runs_taken_at_once_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Equal decode steps taken as one event (cut short by arrivals) give the same token
    times as stepping one at a time."""
    rng = np.random.default_rng(4)
    n = 300
    arr = np.sort(rng.uniform(0, 30, n))
    prompt, out = rng.integers(4, 80, n), rng.integers(2, 60, n)
    trace = Trace("t", arr, np.full(30, n / 30), 30.0, prompt, out)
    small = GenerateProfile(((1, 0.010), (4, 0.012), (8, 0.02)), 1e-4, 16 * 40, 16)
    cfg = GenFleetConfig(profile=small, limits=EngineLimits(max_running=8))
    fast = simulate_generation(trace, _fixed(), cfg)
    monkeypatch.setattr(GenReplica, "_stretch", lambda self: None)
    slow = simulate_generation(trace, _fixed(), cfg)
    f, s = fast.generation, slow.generation
    assert f is not None and s is not None and f.tokens == s.tokens  # times: to rounding
    assert f.tokens_per_second == pytest.approx(s.tokens_per_second, rel=1e-9)
    for a, b in ((f.ttft_ms, s.ttft_ms), (f.itl_ms, s.itl_ms), (f.e2e_ms, s.e2e_ms)):
        assert a == pytest.approx(b, rel=1e-6)
    np.testing.assert_allclose(fast.latency, slow.latency, rtol=1e-9)
