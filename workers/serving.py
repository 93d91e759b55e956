"""A serving scenario: the model behind a dynamic batcher, fed by a seeded Poisson process, every request's
latency taken from its arrival to its result (queueing and batch formation included).

The batcher has the two settings a real server has: the largest batch it runs (``max_batch``) and how long
the oldest waiting request may wait for the batch to fill (``max_wait_ms``). When the model is free it runs
a batch as soon as ``max_batch`` requests wait, or the oldest has waited ``max_wait_ms``; else it waits for
whichever comes first, the next arrival or that deadline (Triton's and TorchServe's rule).

One loop (``run_trial``) serves both ways: on the real model with the monotonic clock (``RealClock``: it
sleeps until the next event, and the executor runs the model, so time passes as the model works), and in
tests on a simulated model over a virtual clock (``VirtualClock``: a discrete-event simulation, the
executor advances the clock by the model's known service time). The batcher and the loop are the same.

Text generation is served with static batching: a batch is formed as above, then generates every reply to
its own length; a request that arrives meanwhile waits for the next batch. Time to first token (TTFT) is
taken from the arrival, the inter-token latency as the mean gap between the request's tokens.
No torch or Django here (workers/measure.py builds the real executors).
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

STATIC, CONTINUOUS = "static", "continuous"  # how a text-generation batch takes in new requests


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep_until(self, moment: float) -> None: ...


class RealClock:
    """The monotonic clock; waiting really sleeps."""

    def now(self) -> float:
        return time.perf_counter()

    def sleep_until(self, moment: float) -> None:
        delay = moment - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


class VirtualClock:
    """A clock that only moves when told: waiting jumps to the moment, a simulated batch advances it."""

    def __init__(self, start: float = 0.0) -> None:
        self.moment = start

    def now(self) -> float:
        return self.moment

    def sleep_until(self, moment: float) -> None:
        self.moment = max(self.moment, moment)

    def advance(self, seconds: float) -> None:
        self.moment += seconds


@dataclass(frozen=True)
class BatcherSetting:
    max_batch: int
    max_wait_ms: float

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_wait_ms < 0:
            raise ValueError("a batcher needs max_batch >= 1 and max_wait_ms >= 0")


@dataclass(frozen=True)
class Request:
    index: int
    arrival: float  # on the trial's clock
    tokens: int = 1  # text generation: the reply's length M


@dataclass(frozen=True)
class Served:
    """When a request got its first token (a classifier: its result) and its last, on the trial's clock."""

    first: float
    done: float


Executor = Callable[[Sequence[Request]], Sequence[Served]]


class DynamicBatcher:
    """The waiting requests and the rule that says when to run a batch of them (oldest first)."""

    def __init__(self, setting: BatcherSetting) -> None:
        self.setting = setting
        self.waiting: deque[Request] = deque()

    def add(self, request: Request) -> None:
        self.waiting.append(request)

    def deadline(self) -> float | None:
        """When the oldest waiting request has waited ``max_wait_ms``; None when nothing waits."""
        return self.waiting[0].arrival + self.setting.max_wait_ms / 1000 if self.waiting else None

    def ready(self, now: float) -> bool:
        deadline = self.deadline()
        if deadline is None:
            return False
        return len(self.waiting) >= self.setting.max_batch or now >= deadline

    def take(self) -> list[Request]:
        count = min(self.setting.max_batch, len(self.waiting))
        return [self.waiting.popleft() for _ in range(count)]


@dataclass(frozen=True)
class Targets:
    """What a request must meet: its result (text generation: its first token) within ``first_ms`` of its
    arrival, and for text generation a mean gap between its tokens within ``itl_ms``, for replies of
    ``tokens`` tokens (the request's M)."""

    first_ms: float
    itl_ms: float | None = None
    tokens: int = 1

    def met(self, request: Request, served: Served) -> bool:
        if (served.first - request.arrival) * 1000 > self.first_ms:
            return False
        if self.itl_ms is None or request.tokens < 2:
            return True
        return (served.done - served.first) * 1000 / (request.tokens - 1) <= self.itl_ms


@dataclass(frozen=True)
class TrialLimits:
    """How long a trial runs. The first ``warmup_requests`` arrivals (and any within ``warmup_seconds``)
    are served but not counted, so the queue is in its steady state; then the trial stops once at least
    ``min_requests`` were counted over at least ``min_seconds`` and the stopping rule is decided, or at
    ``max_requests`` counted requests, or after ``max_seconds`` in all."""

    warmup_requests: int = 50
    warmup_seconds: float = 0.2
    min_requests: int = 200
    max_requests: int = 2000
    min_seconds: float = 1.0
    max_seconds: float = 10.0


# (requests within the targets, requests counted) -> whether the trial has said enough.
Decided = Callable[[int, int], bool]


@dataclass(frozen=True)
class TrialResult:
    offered_rps: float
    requests: int  # counted (warm-up left out)
    met: int
    first_ms: tuple[float, ...]  # per counted request: its latency (text generation: TTFT), ms
    duration_s: float  # from the first counted arrival to the end of the trial

    @property
    def attainment(self) -> float:
        return self.met / self.requests if self.requests else 0.0


def poisson_arrivals(rate: float, seed: int, start: float = 0.0) -> Callable[[], float]:
    """The next arrival time, each call: exponential gaps of mean ``1 / rate`` from a seeded RNG."""
    rng = random.Random(seed)
    moment = [start]

    def following() -> float:
        moment[0] += rng.expovariate(rate)
        return moment[0]

    return following


def run_trial(
    rate: float,
    setting: BatcherSetting,
    execute: Executor,
    *,
    clock: Clock,
    targets: Targets,
    limits: TrialLimits,
    seed: int,
    decided: Decided = lambda met, count: False,
    tokens: int = 1,
) -> TrialResult:
    """Serve Poisson arrivals at ``rate`` requests/s through the batcher until the limits say stop.

    The arrivals are drawn in advance of the clock (an open loop: they never wait for the server), and a
    request's latency runs from its scheduled arrival. When the trial stops, a request still waiting that
    has already missed its target counts as a miss; the others still waiting are left out."""
    if rate <= 0:
        raise ValueError("the arrival rate must be > 0")
    start = clock.now()
    following = poisson_arrivals(rate, seed, start)
    batcher = DynamicBatcher(setting)
    upcoming = following()
    index, met, counted = 0, 0, 0
    first_ms: list[float] = []
    first_counted: float | None = None

    def counts(request: Request) -> bool:
        return request.index >= limits.warmup_requests and request.arrival - start >= limits.warmup_seconds

    while True:
        now = clock.now()
        while upcoming <= now:
            batcher.add(Request(index, upcoming, tokens))
            index, upcoming = index + 1, following()
        if batcher.ready(now):
            batch = batcher.take()
            for request, served in zip(batch, execute(batch), strict=True):
                if counts(request):
                    first_counted = request.arrival if first_counted is None else first_counted
                    counted += 1
                    met += targets.met(request, served)
                    first_ms.append((served.first - request.arrival) * 1000)
            elapsed = clock.now() - start
            spent = first_counted is not None and clock.now() - first_counted >= limits.min_seconds
            enough = counted >= limits.min_requests and spent and decided(met, counted)
            if enough or counted >= limits.max_requests or elapsed >= limits.max_seconds:
                break
            continue
        deadline = batcher.deadline()
        clock.sleep_until(upcoming if deadline is None else min(upcoming, deadline))
    end = clock.now()
    for request in batcher.waiting:  # already late: a miss whatever happens next
        if counts(request) and (end - request.arrival) * 1000 > targets.first_ms:
            counted += 1
            first_ms.append((end - request.arrival) * 1000)
    return TrialResult(
        offered_rps=rate,
        requests=counted,
        met=met,
        first_ms=tuple(first_ms),
        duration_s=end - (first_counted if first_counted is not None else start),
    )


def simulated_executor(
    clock: VirtualClock, service_s: Callable[[int], float], step_s: Callable[[int], float] | None = None
) -> Executor:
    """A model with a known service time on the virtual clock: a batch of b takes ``service_s(b)`` seconds
    to its first token (a classifier: to its result), then ``step_s(b)`` per further token of the longest
    reply (static batching). Each is called once per batch, so either may draw at random."""

    def execute(batch: Sequence[Request]) -> list[Served]:
        clock.advance(service_s(len(batch)))
        first = clock.now()
        steps = max(r.tokens for r in batch) - 1
        step = step_s(len(batch)) if step_s is not None else 0.0  # one draw per batch: its steps alike
        if steps > 0:
            clock.advance(step * steps)
        return [Served(first, first + step * (r.tokens - 1)) for r in batch]

    return execute


def model_executor(
    model: object,
    tokenizer: object,
    texts: Sequence[str],
    *,
    device: str,
    config: object,
    generative: bool,
    max_batch: int,
    warm_sizes: Sequence[int] = (),
) -> Executor:
    """The real model as an executor, on ``time.perf_counter`` (the clock of ``RealClock``): it runs each
    batch and says when each request got its first token and its last (a classifier: its result).

    Inputs are eval texts, encoded for every batch size up to ``max_batch`` before any clock starts, and
    each of ``warm_sizes`` runs once untimed first. Text generation is batched statically: the batch generates as
    many tokens as its longest reply (greedy, KV cache on, as the latency sweep). torch is imported here,
    so only a worker calls this."""
    import itertools

    import torch

    from workers.measure import _encoder, _generate, _sync, _timing_batches

    encode = _encoder(config, device, generative=generative)  # type: ignore[arg-type]
    cycles = {
        size: itertools.cycle(_timing_batches(lambda chunk: encode(tokenizer, chunk), texts, size, count=4))
        for size in range(1, max_batch + 1)
    }

    def execute(batch: Sequence[Request]) -> list[Served]:
        inputs = next(cycles[len(batch)])
        with torch.inference_mode():
            if not generative:
                model(**inputs)  # type: ignore[operator]
                _sync(device)
                now = time.perf_counter()
                return [Served(now, now) for _ in batch]
            marks: list[float] = []
            longest = max(r.tokens for r in batch)
            _generate(model, inputs, longest, device, on_token=lambda _i: marks.append(time.perf_counter()))
        return [Served(marks[0], marks[r.tokens - 1]) for r in batch]

    for size in warm_sizes:  # lazy initialisation is no request's wait
        execute([Request(i, 0.0, 2) for i in range(size)])
    return execute
