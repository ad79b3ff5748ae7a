"""The capacity model's simulation against queueing theory where that holds exactly, and the planner's
answers against the simulation (bench/capacity.py checks it against two real replicas)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lamina.core.errors import ConfigError
from lamina.serving.capacity import ReplicaProfile, Trace, plan, simulate

ONE_AT_A_TIME = {"max_batch": 1, "max_waiting": 10**9, "max_queue_wait": 1e9}


def test_one_request_at_a_time_with_exponential_service_is_m_m_1() -> None:
    mu, lam = 10.0, 7.0
    service = list(np.random.default_rng(1).exponential(1 / mu, 50_000))
    profile = ReplicaProfile(ttft_s={1: service}, tpot_s={1: [0.01]}, output_tokens=[1], **ONE_AT_A_TIME)
    result = simulate(profile, 1, lam, requests=100_000, seed=2)
    # M/M/1: the mean time in the system is 1 / (mu - lambda)
    assert result.ttft_mean == pytest.approx(1 / (mu - lam), rel=0.05)
    assert result.busy == pytest.approx(lam / (mu - lam), rel=0.08)  # Little: L = lambda W
    assert result.throughput == pytest.approx(lam, rel=0.03) and result.rejected == 0


def test_one_request_at_a_time_with_fixed_service_is_m_d_1() -> None:
    mu, lam = 10.0, 8.0
    profile = ReplicaProfile(ttft_s={1: [1 / mu]}, tpot_s={1: [0.01]}, output_tokens=[1], **ONE_AT_A_TIME)
    result = simulate(profile, 1, lam, requests=100_000, seed=3)
    rho = lam / mu
    # Pollaczek-Khinchine: waiting rho / (2 mu (1 - rho)), plus the service itself
    assert result.ttft_mean == pytest.approx(1 / mu + rho / (2 * mu * (1 - rho)), rel=0.05)


def test_an_uncongested_batch_decodes_every_request_at_the_measured_speed() -> None:
    profile = ReplicaProfile(
        ttft_s={1: [0.05]}, tpot_s={1: [0.01], 64: [0.01]}, output_tokens=[11], max_batch=1000
    )
    result = simulate(profile, 3, 50, requests=5_000)
    assert result.latency_mean == pytest.approx(0.05 + 10 * 0.01)  # first token, then ten at 10 ms
    assert result.ttft_p95 == pytest.approx(0.05)
    assert result.busy == pytest.approx(50 * 0.15 / 3, rel=0.05)


def test_a_larger_batch_is_slower_per_token_and_the_queue_refuses_past_its_wait() -> None:
    profile = ReplicaProfile(
        ttft_s={1: [0.01], 32: [0.05]}, tpot_s={1: [0.001], 32: [0.01]}, output_tokens=[50], max_batch=32
    )
    assert profile.tpot(1) == 0.001 and profile.tpot(32) == pytest.approx(0.01)
    assert profile.tpot(16) == pytest.approx(0.001 + 0.009 * 15 / 31)
    light = simulate(profile, 2, 0.2 * 2 * profile.peak_rate(), requests=5_000)
    heavy = simulate(profile, 2, 0.9 * 2 * profile.peak_rate(), requests=5_000)
    over = simulate(profile, 2, 3 * 2 * profile.peak_rate(), requests=5_000)
    assert light.latency_mean < heavy.latency_mean and light.rejected == heavy.rejected == 0
    assert over.rejected > 0.5  # three times the peak: most are answered 429
    assert over.throughput == pytest.approx(2 * profile.peak_rate(), rel=0.2)


def test_power_of_two_choices_beats_one_random_replica() -> None:
    profile = ReplicaProfile(
        ttft_s={1: list(np.random.default_rng(0).exponential(0.1, 10_000))}, tpot_s={1: [0.01]},
        output_tokens=[1], **ONE_AT_A_TIME,
    )  # fmt: skip
    four = simulate(profile, 4, 4 * 0.8 * 10, requests=40_000)
    one = simulate(profile, 1, 0.8 * 10, requests=40_000)  # what random dispatch gives each replica
    assert four.ttft_mean < 0.6 * one.ttft_mean


def test_two_replicas_are_join_the_shortest_queue_close_to_m_m_2() -> None:
    """The gateway draws two different replicas: with two, every request goes to the shorter queue
    (drawing one replica twice dispatched half the requests at random: 0.33 s here)."""
    mu, lam = 10.0, 16.0
    service = list(np.random.default_rng(1).exponential(1 / mu, 50_000))
    profile = ReplicaProfile(ttft_s={1: service}, tpot_s={1: [0.01]}, output_tokens=[1], **ONE_AT_A_TIME)
    result = simulate(profile, 2, lam, requests=100_000, seed=2)
    rho = lam / (2 * mu)
    m_m_2 = 1 / mu + (2 * rho**2 / (1 + rho)) / (2 * mu - lam)  # one shared queue: the lower bound
    assert m_m_2 < result.ttft_mean < 1.1 * m_m_2  # 0.278 s and 0.298 s


def test_the_plan_is_the_fewest_replicas_that_meet_the_objective() -> None:
    profile = ReplicaProfile(
        ttft_s={1: [0.01, 0.012], 8: [0.02, 0.03], 32: [0.06, 0.09]},
        tpot_s={1: [0.001], 8: [0.003], 32: [0.008]}, output_tokens=[32, 64],
    )  # fmt: skip
    answer = plan(profile, 200, 0.05, replicas_per_node=2, requests=10_000)
    assert answer.result.ttft_p95 <= 0.05 and answer.result.rejected == 0
    assert answer.below is not None and answer.below.ttft_p95 > 0.05
    assert answer.nodes == -(-answer.replicas // 2)
    double = plan(profile, 400, 0.05, requests=10_000)
    assert answer.replicas < double.replicas <= 2 * answer.replicas + 1
    with pytest.raises(ConfigError, match="below what one idle replica gives"):
        plan(profile, 200, 0.005)


def test_a_profile_round_trips_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    profile = ReplicaProfile(
        ttft_s={1: [0.01], 4: [0.02]}, tpot_s={1: [0.001]}, output_tokens=[8], source="t"
    )
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile.to_json()))
    again = ReplicaProfile.load(path)
    assert again.ttft_s == {1: [0.01], 4: [0.02]} and again.tpot(7) == 0.001 and again.source == "t"
    with pytest.raises(ConfigError, match="output_tokens"):
        ReplicaProfile(ttft_s={1: [0.01]}, tpot_s={1: [0.001]}, output_tokens=[])
    with pytest.raises(ConfigError, match="negative"):
        ReplicaProfile(ttft_s={1: [-1.0]}, tpot_s={1: [0.001]}, output_tokens=[4])
    path.write_text("{")
    with pytest.raises(ConfigError, match="bench/capacity.py"):
        ReplicaProfile.load(path)


def test_lamina_capacity_plans_each_rate_and_refuses_an_impossible_objective(cli, tmp_path: Path) -> None:
    profile = ReplicaProfile(
        ttft_s={1: [0.01, 0.012], 8: [0.02, 0.03], 32: [0.06, 0.09]},
        tpot_s={1: [0.001], 8: [0.003], 32: [0.008]}, output_tokens=[32, 64], source="a test profile",
    )  # fmt: skip
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile.to_json()))
    done = cli("capacity", str(path), "--rate", "50", "--rate", "500", "--ttft-p95-ms", "60",
               "--replicas-per-node", "4", "--json")  # fmt: skip
    assert done.code == 0, done.err
    small, large = json.loads(done.out)
    assert small["replicas"] < large["replicas"] and large["nodes"] == -(-large["replicas"] // 4)
    assert large["simulated"]["ttft_p95"] <= 0.060 and large["one_fewer"]["ttft_p95"] > 0.060
    shown = cli("capacity", str(path), "--rate", "50", "--ttft-p95-ms", "60")
    assert shown.code == 0 and "a test profile" in shown.out and str(small["replicas"]) in shown.out
    refused = cli("capacity", str(path), "--rate", "50", "--ttft-p95-ms", "5")
    assert refused.code == 2 and "below what one idle replica gives" in refused.err
    missing = cli("capacity", str(tmp_path / "none.json"), "--rate", "50")
    assert missing.code == 2 and "bench/capacity.py" in missing.err


def engine_profile(**times: object) -> ReplicaProfile:
    """A profile with the engine's iteration times (the client-side tables are then unused)."""
    base: dict = {"ttft_s": {1: [0.01]}, "tpot_s": {1: [0.001]}, "output_tokens": [1]}
    return ReplicaProfile(**(base | times))  # type: ignore[arg-type]


def test_engine_replay_one_request_at_a_time_is_m_d_1() -> None:
    mu, lam = 10.0, 8.0
    profile = engine_profile(step_s={1: [0.001]}, prefill_s={1: [1 / mu]}, **ONE_AT_A_TIME)
    assert profile.iterates
    result = simulate(profile, 1, lam, requests=100_000, seed=3)
    rho = lam / mu  # each request is one prefill (its only token): Pollaczek-Khinchine again
    assert result.ttft_mean == pytest.approx(1 / mu + rho / (2 * mu * (1 - rho)), rel=0.05)
    assert result.latency_mean == pytest.approx(result.ttft_mean)


def test_engine_replay_of_a_lone_request_adds_prefill_steps_and_the_client_overhead() -> None:
    profile = engine_profile(
        step_s={1: [0.002], 8: [0.004]}, prefill_s={1: [0.02]}, overhead_s=[0.005], output_tokens=[11]
    )
    result = simulate(profile, 4, 0.5, requests=2_000)  # one request in ~8 s per replica: nearly always alone
    assert result.ttft_p50 == pytest.approx(0.02 + 0.005)
    # ten more tokens, eight then two (alone_steps), at the lone step time
    assert result.latency_p50 == pytest.approx(0.02 + 10 * 0.002 + 0.005)
    assert result.latency_mean == pytest.approx(0.045, rel=0.01)  # the rare overlap costs little


def test_engine_replay_stalls_the_batch_for_each_join_and_makes_arrivals_wait_for_the_iteration() -> None:
    """Same client-side times, two models: the processor-sharing one decodes through a newcomer's
    prefill; the engine replay stops the whole batch for it, as ``Engine._run`` does."""
    times = {"ttft_s": {1: [0.02]}, "tpot_s": {1: [0.001], 32: [0.001]}, "output_tokens": [50]}
    sharing = ReplicaProfile(**times)  # type: ignore[arg-type]
    replay = ReplicaProfile(**times, step_s={1: [0.001], 32: [0.001]}, prefill_s={1: [0.02], 4: [0.02]},
                            alone_steps=1)  # type: ignore[arg-type]  # fmt: skip
    shared, replayed = simulate(sharing, 1, 20, requests=20_000), simulate(replay, 1, 20, requests=20_000)
    assert shared.latency_mean == pytest.approx(0.02 + 49 * 0.001, rel=0.02)  # nobody slows anybody
    # each request's 49 steps see about 20/s × ~0.1 s ≈ 2 joins of 20 ms each
    assert replayed.latency_mean > shared.latency_mean + 0.02
    assert replayed.ttft_mean > 0.02 and replayed.ttft_p50 < replayed.ttft_p95  # it waited for iterations
    assert replayed.busy == pytest.approx(20 * replayed.latency_mean, rel=0.05)  # Little's law


def test_an_engine_profile_round_trips_and_half_of_one_is_refused(tmp_path: Path) -> None:
    profile = engine_profile(
        step_s={1: [0.001], 4: [0.003]}, prefill_s={1: [0.01]}, overhead_s=[0.002], alone_steps=4
    )
    path = tmp_path / "engine.json"
    path.write_text(json.dumps(profile.to_json()))
    again = ReplicaProfile.load(path)
    assert again == profile and again.step(2) == pytest.approx(0.001 + 0.002 / 3) and again.prefill(3) == 0.01
    with pytest.raises(ConfigError, match="together"):
        engine_profile(step_s={1: [0.001]})
    with pytest.raises(ConfigError, match="negative"):
        engine_profile(step_s={1: [-0.001]}, prefill_s={1: [0.01]})


def test_a_trace_replays_exactly_the_recorded_arrivals_and_answer_lengths() -> None:
    """Replaying recorded traffic: spaced arrivals are served alone, and the same requests sent as
    one burst queue behind each other; lengths come from the trace, not from the profile."""
    profile = engine_profile(step_s={1: [0.002], 8: [0.004]}, prefill_s={1: [0.02], 8: [0.05]},
                             overhead_s=[0.005], output_tokens=[99])  # fmt: skip
    spaced = Trace(arrivals=[float(i) for i in range(20)], tokens=[11] * 20)
    alone = simulate(profile, 1, 1.0, trace=spaced, warmup=0)
    assert alone.requests == 20 and alone.rate == pytest.approx(1.0)
    assert alone.ttft_mean == pytest.approx(0.02 + 0.005)  # prefill alone, plus the client's overhead
    assert alone.latency_mean == pytest.approx(0.02 + 10 * 0.002 + 0.005)  # 11 tokens, not the profile's 99
    burst = Trace(arrivals=[0.0] * 19 + [1.0], tokens=[11] * 20)
    queued = simulate(profile, 1, 1.0, trace=burst, warmup=0)
    assert queued.ttft_mean > 0.04  # 19 prefilled together at the batch's prefill time
    # the engine-free model replays the same trace too
    sharing = ReplicaProfile(ttft_s={1: [0.02]}, tpot_s={1: [0.002]}, output_tokens=[99])
    assert simulate(sharing, 1, 1.0, trace=spaced, warmup=0).latency_mean == pytest.approx(0.02 + 10 * 0.002)


def test_a_poisson_trace_gives_what_the_simulation_draws_itself() -> None:
    profile = engine_profile(step_s={1: [0.002], 8: [0.004], 32: [0.01]}, prefill_s={1: [0.01], 4: [0.02]},
                             overhead_s=[0.003], output_tokens=[40])  # fmt: skip
    rng = np.random.default_rng(7)
    arrivals = np.cumsum(rng.exponential(1 / 60, 40_000))
    replayed = simulate(profile, 2, 0, trace=Trace(arrivals=list(arrivals), tokens=[40] * 40_000))
    drawn = simulate(profile, 2, 60, requests=40_000, seed=8)
    assert replayed.rate == pytest.approx(60, rel=0.02)
    for key in ("ttft_mean", "latency_mean", "throughput"):
        assert getattr(replayed, key) == pytest.approx(getattr(drawn, key), rel=0.03), key


@pytest.mark.parametrize(
    ("arrivals", "tokens", "message"),
    [
        ([0.0, 1.0], [5, 5], "at least 10"),
        ([float(i) for i in range(10)], [5] * 9, "one answer length"),
        ([float(10 - i) for i in range(10)], [5] * 10, "in order"),
        ([float(i) for i in range(10)], [0] * 10, "one token"),
        ([1.0] * 10, [5] * 10, "span"),
    ],
)
def test_a_bad_trace_is_refused(arrivals: list[float], tokens: list[int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Trace(arrivals=arrivals, tokens=tokens)
