"""Interleaved timing, its stopping rule, the unstable rule and the re-measure loop (workers/timing.py), with
an injected clock and seeded RNGs; plus one real run against competing busy processes."""

import json
import random
import statistics
import subprocess
import sys

import pytest

from workers.hostload import HostMonitor
from workers.timing import TimingPolicy, measure_speedup, time_interleaved
from workers.trust import (
    BASELINE,
    CANDIDATE,
    FLAG_BORDERLINE,
    FLAG_NO_P99,
    FLAG_UNSTABLE,
    STOP_MAX_ROUNDS,
    STOP_MAX_SECONDS,
    STOP_PRECISE,
    HostLoad,
    IntervalEstimate,
    TimingTrust,
    TrustRule,
    carryover_reasons,
    unstable_reasons,
)

FAST = TimingPolicy(warmup=2, iterations_per_round=5, min_rounds=10, min_samples=50, remeasure_pause_s=0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def unit(clock: FakeClock, seconds: float, *, slowdown=lambda now: 1.0, log=None, name=""):
    """A timed unit that takes ``seconds`` of fake time, times whatever slowdown the host has then."""

    def run() -> None:
        if log is not None:
            log.append(name)
        clock.now += seconds * slowdown(clock.now)

    return run


def host_at(share: float, load: float = 1.0, cpus: int = 2):
    """A host monitor factory whose counters show other processes using ``share`` of the machine."""
    state = {"reads": 0}

    def read_stat() -> str:
        state["reads"] += 1
        busy = int(share * 1000) * state["reads"]
        return f"cpu  {busy} 0 0 {1000 * state['reads'] - busy} 0 0 0 0 0 0\n"

    return lambda: HostMonitor(
        read_stat=read_stat, read_load=lambda: load, own_cpu=lambda: 0.0, cpu_count=cpus
    )


def test_rounds_interleave_both_subjects_in_a_seeded_random_order():
    clock = FakeClock()
    log: list[str] = []
    policy = TimingPolicy(warmup=3, iterations_per_round=4, min_rounds=12, max_rounds=12, min_samples=1)
    run = time_interleaved(
        unit(clock, 0.002, log=log, name=BASELINE),
        unit(clock, 0.001, log=log, name=CANDIDATE),
        policy=policy,
        clock=clock,
        rng=random.Random(11),
    )
    assert log[:6] == [BASELINE, CANDIDATE] * 3  # warm-up alternates, untimed
    timed = log[6:]
    assert len(timed) == 12 * 2 * 4
    for r in range(12):
        block = timed[r * 8 : (r + 1) * 8]
        assert block == [run.first[r]] * 4 + [c for c in (BASELINE, CANDIDATE) if c != run.first[r]] * 4
    expected = random.Random(11)
    orders = []
    for _ in range(12):
        order = [BASELINE, CANDIDATE]
        expected.shuffle(order)
        orders.append(order[0])
    assert list(run.first) == orders
    assert set(run.first) == {BASELINE, CANDIDATE}  # both orders happen
    assert run.samples(BASELINE) == run.samples(CANDIDATE) == 48
    assert all(len(r) == 4 for r in run.baseline + run.candidate)
    assert run.round_ratios() == pytest.approx([2.0] * 12)
    assert run.round_medians(BASELINE) == pytest.approx([0.002] * 12)
    again = time_interleaved(
        unit(clock, 0.002), unit(clock, 0.001), policy=policy, clock=clock, rng=random.Random(11)
    )
    assert again.first == run.first


def test_iterations_per_round_come_from_the_warm_up():
    clock = FakeClock()
    policy = TimingPolicy(warmup=3, block_seconds=0.05, min_rounds=10, max_rounds=10, min_samples=1)
    run = time_interleaved(unit(clock, 0.012), unit(clock, 0.004), policy=policy, clock=clock)
    assert run.iterations_per_round == 5  # the slower subject's block lasts at least 50 ms
    slow = time_interleaved(unit(clock, 1.0), unit(clock, 0.5), policy=policy, clock=clock)
    assert slow.iterations_per_round == 1


def test_a_steady_speedup_stops_at_the_minimum_once_precise():
    clock = FakeClock()
    run = time_interleaved(unit(clock, 0.003), unit(clock, 0.002), policy=FAST, clock=clock)
    assert run.stop_reason == STOP_PRECISE
    assert run.rounds == 10  # min_rounds, and 10 x 5 iterations = min_samples
    more_samples = TimingPolicy(warmup=2, iterations_per_round=5, min_rounds=10, min_samples=80)
    run = time_interleaved(unit(clock, 0.003), unit(clock, 0.002), policy=more_samples, clock=clock)
    assert run.rounds == 16  # 16 x 5 >= 80


def test_a_noisy_speedup_runs_to_the_round_limit_or_the_time_limit():
    clock = FakeClock()
    noise = random.Random(0)

    def jitter(now: float) -> float:
        return noise.choice([0.5, 1.0, 2.0])  # each iteration's own luck

    policy = TimingPolicy(warmup=1, iterations_per_round=1, min_rounds=10, max_rounds=30, min_samples=1)
    run = time_interleaved(
        unit(clock, 0.003, slowdown=jitter), unit(clock, 0.002, slowdown=jitter), policy=policy, clock=clock
    )
    assert run.stop_reason == STOP_MAX_ROUNDS and run.rounds == 30
    timed = TimingPolicy(warmup=1, iterations_per_round=1, min_rounds=10, max_seconds=1.0, min_samples=1)
    run = time_interleaved(
        unit(clock, 0.03, slowdown=jitter), unit(clock, 0.02, slowdown=jitter), policy=timed, clock=clock
    )
    assert run.stop_reason == STOP_MAX_SECONDS
    assert 10 <= run.rounds <= 25 and run.seconds >= 1.0
    slow = time_interleaved(unit(clock, 1.0), unit(clock, 2.0, slowdown=jitter), policy=timed, clock=clock)
    assert slow.rounds == 10 and slow.stop_reason == STOP_MAX_SECONDS  # the minimum stands


def test_interference_during_the_candidate_flips_one_pass_but_not_interleaved_rounds():
    """A host that turns 8x slower for a while: timed one after the other, the candidate takes the whole
    slowdown (the issue's 1.50x read as 0.11x); interleaved, both halves of a round share it."""

    def slowdown(now: float) -> float:
        return 8.0 if 0.25 <= now < 4.0 else 1.0

    clock = FakeClock()
    baseline, candidate = unit(clock, 0.003, slowdown=slowdown), unit(clock, 0.002, slowdown=slowdown)
    one_pass = {}
    for name, subject, seconds in ((BASELINE, baseline, 0.2), (CANDIDATE, candidate, 1.0)):
        times = []
        started = clock.now
        while clock.now - started < seconds:
            t0 = clock.now
            subject()
            times.append(clock.now - t0)
        one_pass[name] = statistics.median(times)
    assert one_pass[BASELINE] / one_pass[CANDIDATE] < 0.25

    clock.now = 0.0
    policy = TimingPolicy(warmup=1, iterations_per_round=5, min_rounds=40, max_rounds=40, min_samples=1)
    comparison = measure_speedup(baseline, candidate, policy=policy, clock=clock, host=host_at(0.0))
    slowed = [r for r in comparison.run.baseline if min(r) > 0.01]
    assert len(slowed) >= 10  # the slowdown hit a good share of the rounds
    speedup = comparison.trust.speedup
    assert speedup is not None and speedup.value == pytest.approx(1.5)
    assert speedup.contains(1.5) and not comparison.trust.unstable


def test_unstable_reasons_name_the_wide_interval_and_the_busy_host():
    quiet = HostLoad(2, 0.9, 1.0, 0.05, 0.1, 10.0, 10)
    busy = HostLoad(2, 3.8, 4.1, 0.62, 0.9, 10.0, 10)
    narrow = IntervalEstimate(1.5, 1.47, 1.53, 20, 0.95)
    wide = IntervalEstimate(1.5, 1.1, 1.9, 20, 0.95)
    rule = TrustRule(max_relative_half_width=0.10, max_other_cpu_share=0.25)
    assert unstable_reasons(narrow, quiet, rule, rounds=20) == ()
    assert unstable_reasons(wide, quiet, rule, rounds=20) == (
        "the speedup interval is ±27% of the estimate (more than ±10%) after 20 rounds",
    )
    assert unstable_reasons(narrow, busy, rule, rounds=20) == (
        "the host was busy (load 4.1 on 2 cores; other processes used 62% of the CPU)",
    )
    assert len(unstable_reasons(None, busy, rule, rounds=4)) == 2
    unknown = HostLoad(2, None, None, None, None, 1.0, 2)
    assert unstable_reasons(narrow, unknown, rule, rounds=20) == ()


def test_a_busy_host_is_re_measured_and_a_clean_attempt_kept():
    clock = FakeClock()
    shares = iter([0.6, 0.5, 0.0])
    factories = {0.6: host_at(0.6, load=4.1), 0.5: host_at(0.5, load=3.0), 0.0: host_at(0.0)}
    pauses: list[float] = []
    policy = TimingPolicy(warmup=1, iterations_per_round=3, min_rounds=10, min_samples=1, remeasure=2)
    rounds_seen: list[tuple[int, int]] = []
    comparison = measure_speedup(
        unit(clock, 0.003),
        unit(clock, 0.002),
        policy=policy,
        clock=clock,
        host=lambda: factories[next(shares)](),
        sleep=pauses.append,
        on_round=lambda attempt, done: rounds_seen.append((attempt, done)),
    )
    trust = comparison.trust
    assert pauses == [policy.remeasure_pause_s] * 2
    assert trust.attempts == 3 and not trust.unstable and trust.status == "clean"
    assert [bool(a.reasons) for a in trust.history] == [True, True, False]
    assert "load 4.1 on 2 cores" in trust.history[0].reasons[0]
    assert trust.host.other_cpu_share == pytest.approx(0.0)
    assert {attempt for attempt, _ in rounds_seen} == {1, 2, 3} and (3, 10) in rounds_seen


def test_a_host_that_stays_busy_is_kept_and_marked_unstable_never_clean():
    clock = FakeClock()
    policy = TimingPolicy(warmup=1, iterations_per_round=3, min_rounds=10, min_samples=1, remeasure=1)
    comparison = measure_speedup(
        unit(clock, 0.003),
        unit(clock, 0.002),
        policy=policy,
        clock=clock,
        host=host_at(0.7, load=4.1),
        sleep=lambda s: None,
    )
    trust = comparison.trust
    assert trust.attempts == 2 and trust.unstable and trust.status == FLAG_UNSTABLE
    assert trust.reasons == ("the host was busy (load 4.1 on 2 cores; other processes used 70% of the CPU)",)
    assert FLAG_UNSTABLE in trust.flags()
    assert trust.speedup is not None and trust.speedup.value == pytest.approx(1.5)  # kept, not dropped
    assert comparison.run.rounds == trust.rounds


def test_the_trust_record_round_trips_through_plain_json_with_its_flags():
    clock = FakeClock()
    noise = random.Random(1)
    policy = TimingPolicy(warmup=1, iterations_per_round=2, min_rounds=10, max_rounds=40, min_samples=1)
    comparison = measure_speedup(
        unit(clock, 0.002, slowdown=lambda now: noise.uniform(0.9, 1.1)),
        unit(clock, 0.002, slowdown=lambda now: noise.uniform(0.9, 1.1)),
        policy=policy,
        clock=clock,
        host=host_at(0.0),
    )
    trust = comparison.trust
    stored = json.loads(json.dumps(trust.to_json()))
    assert TimingTrust.from_json(stored) == trust
    assert stored["status"] == trust.status and stored["flags"] == trust.flags()
    assert trust.baseline.samples == trust.rounds * 2 and trust.baseline.rounds == trust.rounds
    assert trust.baseline.p50_ms is not None and trust.baseline.p50_ms.value == pytest.approx(2.0, rel=0.1)
    assert trust.baseline.p99_ms is None  # far fewer than 500 samples
    assert FLAG_NO_P99 in trust.flags() and FLAG_BORDERLINE in trust.flags()  # same speed: within noise
    assert type(comparison.run).from_json(json.loads(json.dumps(comparison.run.to_json()))) == comparison.run


def test_policy_refuses_settings_that_cannot_work():
    with pytest.raises(ValueError):
        TimingPolicy(min_rounds=10, max_rounds=5)
    with pytest.raises(ValueError):
        TimingPolicy(iterations_per_round=0, warmup=0)
    with pytest.raises(ValueError):
        TimingPolicy(target_precision=0)


def _work(n: int) -> None:
    total = 0
    for i in range(n):
        total += i


def test_real_workload_against_busy_processes_keeps_its_ratio_or_is_flagged():
    """Two busy-loop processes compete with a pure-Python workload whose baseline does twice the
    candidate's work: interleaved, the speedup stays near 2, or the result says the host was busy."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        policy = TimingPolicy(
            warmup=3, block_seconds=0.01, min_rounds=10, max_rounds=400, max_seconds=3.0, remeasure=0
        )
        trust = measure_speedup(lambda: _work(40_000), lambda: _work(20_000), policy=policy).trust
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert trust.speedup is not None
    holds = abs(trust.speedup.value - 2.0) / 2.0 < 0.25
    assert holds or trust.unstable
    share = trust.host.other_cpu_share
    if share is not None:  # Linux: the busy loops were seen, and a busy host is never reported clean
        cores = trust.host.cpu_count
        assert share > 0.4 * min(2, cores) / cores  # two busy loops: up to two cores' worth
        if share > policy.unstable_cpu_share:
            assert any(r.startswith("the host was busy") for r in trust.reasons)


def test_what_the_units_return_comes_back_per_round_from_the_kept_attempt_only():
    """A generation returns its token timestamps; they must line up with the rounds the figures come from,
    without the warm-up and without the attempt that was re-measured."""
    clock = FakeClock()
    calls = {BASELINE: 0, CANDIDATE: 0}

    def counted(name: str, seconds: float):
        def run() -> tuple[str, int]:
            calls[name] += 1
            clock.now += seconds
            return name, calls[name]

        return run

    shares = iter([0.6, 0.0])
    factories = {0.6: host_at(0.6), 0.0: host_at(0.0)}
    policy = TimingPolicy(warmup=2, iterations_per_round=3, min_rounds=10, max_rounds=10, remeasure=1)
    comparison = measure_speedup(
        counted(BASELINE, 0.003),
        counted(CANDIDATE, 0.002),
        policy=policy,
        clock=clock,
        host=lambda: factories[next(shares)](),
        sleep=lambda s: None,
    )
    assert comparison.trust.attempts == 2 and not comparison.trust.unstable
    for name in (BASELINE, CANDIDATE):
        rows = comparison.outputs[name]
        assert [len(row) for row in rows] == [3] * 10
        # Attempt 1: 2 warm-up + 30 timed calls; attempt 2: 2 warm-up, then calls 35 to 64 are its rounds.
        assert [n for row in rows for _, n in row] == list(range(35, 65))
        assert {who for row in rows for who, _ in row} == {name}


def spinning_units(clock: FakeClock, *, spin_s: float):
    """A baseline (3 ms) and a candidate (1 ms) whose threads keep the CPU busy for ``spin_s`` after each
    call: whatever starts within that time runs at half speed (fake time)."""
    state = {"busy_until": -1.0}

    def slowed(seconds: float) -> float:
        overlap = max(0.0, min(seconds, state["busy_until"] - clock.now))
        return seconds + overlap  # half speed while the other's threads spin

    def baseline() -> None:
        clock.now += slowed(0.003)

    def candidate() -> None:
        clock.now += 0.001
        state["busy_until"] = clock.now + spin_s

    return baseline, candidate


def test_a_candidate_that_slows_what_runs_next_is_caught_by_its_carryover():
    """The candidate's spinning threads slow the baseline's next iteration: its blocks right after the
    candidate are slower than those right after itself, which would inflate the speedup. The pairing is
    marked unstable with the reason, and not re-measured (re-measuring cannot cure it)."""
    clock = FakeClock()
    baseline, candidate = spinning_units(clock, spin_s=0.002)
    pauses: list[float] = []
    policy = TimingPolicy(warmup=2, iterations_per_round=1, min_rounds=40, max_rounds=40, remeasure=2)
    trust = measure_speedup(
        baseline, candidate, policy=policy, clock=clock, host=host_at(0.0), sleep=pauses.append
    ).trust
    assert pauses == [] and trust.attempts == 1
    assert trust.status == "unstable"
    assert any("the baseline ran 67% slower right after the candidate" in r for r in trust.reasons)


def test_carryover_is_near_one_for_models_that_do_not_interfere():
    clock = FakeClock()
    policy = TimingPolicy(warmup=2, iterations_per_round=3, min_rounds=40, max_rounds=40)
    run = time_interleaved(unit(clock, 0.003), unit(clock, 0.001), policy=policy, clock=clock)
    carried = run.carryover()
    assert carried[BASELINE] == pytest.approx(1.0) and carried[CANDIDATE] == pytest.approx(1.0)
    assert carryover_reasons(run, tolerance=0.2) == ()
    few = time_interleaved(
        unit(clock, 0.003),
        unit(clock, 0.001),
        policy=TimingPolicy(warmup=1, min_rounds=2, max_rounds=2),
        clock=clock,
    )
    assert few.carryover() == {BASELINE: None, CANDIDATE: None}  # too few blocks of each kind
