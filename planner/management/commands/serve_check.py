"""Checks the predicted goodput against a real server: the worker's batcher behind uvicorn on loopback,
driven by locust with open-loop Poisson arrivals at the predicted rate. A worker-side command (it loads
torch); the web never imports it.

python manage.py serve_check                         # the demo classifier, a 50 ms target
python manage.py serve_check --model DIR --target-ms 20 --seconds 20 --threads 1

It times the model's batch sweep, runs the goodput search (workers/goodput.py) exactly as a PoC does,
then serves the model at that rate with that batcher setting for ``--seconds`` and prints the attainment
measured by the load generator (from each request's scheduled arrival to its response, HTTP included)
against the target share, and the replicas the served run implies against the planner's.
"""

import asyncio
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

LOAD_SCRIPT = Path(__file__).with_name("_serve_load.py")


class BatchingApp:
    """A minimal ASGI app: every GET /infer joins the dynamic batcher; one loop runs the batches on the
    model (in a worker thread, so the event loop keeps taking requests) and answers each request."""

    def __init__(self, execute, setting) -> None:
        from workers.serving import DynamicBatcher

        self.execute, self.batcher = execute, DynamicBatcher(setting)
        self.futures: dict[int, asyncio.Future] = {}
        self.count = 0
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.wake: asyncio.Event | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.wake = asyncio.Event()
                    self.task = asyncio.create_task(self._serve())
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.task.cancel()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        from workers.serving import Request

        request = Request(self.count, time.perf_counter())
        self.count += 1
        future = asyncio.get_running_loop().create_future()
        self.futures[request.index] = future
        self.batcher.add(request)
        assert self.wake is not None  # made at lifespan startup, before uvicorn passes on any request
        self.wake.set()
        served = await future
        body = json.dumps({"ms": (served.done - request.arrival) * 1000}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _serve(self) -> None:
        wake = self.wake
        assert wake is not None  # made at lifespan startup, just before this task
        loop = asyncio.get_running_loop()
        while True:
            now = time.perf_counter()
            if self.batcher.ready(now):
                batch = self.batcher.take()
                served = await loop.run_in_executor(self.pool, self.execute, batch)
                for request, result in zip(batch, served, strict=True):
                    self.futures.pop(request.index).set_result(result)
                continue
            deadline = self.batcher.deadline()
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), None if deadline is None else max(0.0, deadline - now))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Command(BaseCommand):
    help = "Serve a model behind the worker's batcher and check its predicted goodput under real load."

    def add_arguments(self, parser):
        parser.add_argument("--model", default=str(settings.DEMO_MODEL_DIR))
        parser.add_argument("--target-ms", type=float, default=50.0)
        parser.add_argument("--batch-sizes", default="1,4,8")
        parser.add_argument("--seconds", type=float, default=15.0, help="length of the served run")
        parser.add_argument("--threads", type=int, default=1)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--max-length", type=int, default=64, help="tokens per input at most")
        parser.add_argument(
            "--no-pin",
            dest="pin",
            action="store_false",
            help="Do not pin the server (model, batcher, HTTP) to the first CPU and the load generator to "
            "the others; pinned, the load generator's own work does not slow the model it measures.",
        )

    def handle(self, *args, **options):
        import uvicorn

        from plugins.artifacts import load_pretrained
        from workers.datasets import load_demo_examples
        from workers.execution import goodput_policy_from_settings
        from workers.goodput import wilson
        from workers.measure import MeasureConfig, fix_threads, latency_sweep
        from workers.runner import PocSpec
        from workers.serving import BatcherSetting, Targets, model_executor
        from workers.serving_run import serve_goodput
        from workers.timing import TimingPolicy

        model_dir = Path(options["model"])
        if not model_dir.is_dir():
            raise CommandError(f"No model at {model_dir}: run `manage.py demo_setup`, or pass --model DIR.")
        client_cores = self._pin(options["pin"])
        fix_threads(options["threads"])
        task, target = "sequence-classification", options["target_ms"]
        model, tokenizer = load_pretrained(model_dir, task, device="cpu")
        texts = [e.text for e in load_demo_examples()][:64]
        sizes = tuple(int(b) for b in options["batch_sizes"].split(","))
        timing = TimingPolicy(warmup=2, iterations_per_round=10, min_rounds=10, max_rounds=10, remeasure=0)
        config = MeasureConfig(
            batch_sizes=sizes,
            timing=timing,
            max_length=options["max_length"],
            goodput=goodput_policy_from_settings(),
        )
        if config.goodput is None:
            raise CommandError("MEASURE_GOODPUT is off: nothing to check.")
        started = time.perf_counter()
        latency = latency_sweep(model, tokenizer, texts, device="cpu", config=config)
        sweep_s = time.perf_counter() - started
        spec = PocSpec(
            task, str(model_dir), "demo", "cpu", [], "", seed=options["seed"], targets=Targets(target)
        )
        goodput, seconds = serve_goodput(
            model, tokenizer, texts, latency, spec=spec, config=config, step_report=lambda f, m: None
        )
        static = max(
            (p.throughput_rps for p in latency if p.p95_ms is not None and p.p95_ms <= target), default=0.0
        )
        self.stdout.write(
            f"static upper bound: {static:.1f} req/s (best b ÷ median with p95 ≤ {target:g} ms)"
        )
        self.stdout.write(
            f"goodput: {goodput.rps:.1f} req/s, batches of up to {goodput.max_batch}, waiting at most "
            f"{goodput.max_wait_ms:g} ms; attainment {goodput.attainment or 0:.3f} "
            f"({goodput.attainment_low or 0:.3f}–{goodput.attainment_high or 0:.3f}); "
            f"goodput ÷ static = {goodput.rps / static if static else 0:.2f}"
        )
        self.stdout.write(f"time: sweep {sweep_s:.1f} s, goodput search {seconds['goodput_seconds']:.1f} s")
        if goodput.rps <= 0:
            raise CommandError("No rate held: nothing to serve.")

        setting = BatcherSetting(goodput.max_batch, goodput.max_wait_ms)
        execute = model_executor(
            model,
            tokenizer,
            texts,
            device="cpu",
            config=config,
            generative=False,
            max_batch=setting.max_batch,
            warm_sizes=[setting.max_batch],
        )
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                BatchingApp(execute, setting), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            with tempfile.TemporaryDirectory() as scratch:
                out = Path(scratch) / "load.json"
                subprocess.run(
                    [
                        sys.executable,
                        str(LOAD_SCRIPT),
                        f"http://127.0.0.1:{port}",
                        str(goodput.rps),
                        str(options["seconds"]),
                        str(options["seed"]),
                        str(out),
                    ],
                    check=True,
                    timeout=options["seconds"] + 120,
                    preexec_fn=(lambda: os.sched_setaffinity(0, client_cores)) if client_cores else None,
                )
                load = json.loads(out.read_text())
        finally:
            server.should_exit = True
            thread.join(timeout=10)
        self._report(load, goodput, target, options["seconds"], wilson)

    def _pin(self, pin: bool) -> set[int]:
        """Pin this process (the model, the batcher and the HTTP server) to the first CPU it may use and
        return the others, for the load generator; nothing on one CPU, or without --pin."""
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if not pin or len(cores) < 2:
            return set()
        os.sched_setaffinity(0, {cores[0]})
        self.stdout.write(f"server pinned to CPU {cores[0]}, load generator to CPUs {cores[1:]}")
        return set(cores[1:])

    def _report(self, load, goodput, target, seconds, wilson) -> None:
        samples = load["samples"][len(load["samples"]) // 20 :]  # the first 5% is the server warming up
        met = sum(s["done_ms"] <= target for s in samples)
        attained = met / len(samples) if samples else 0.0
        low, high = wilson(met, len(samples))
        predicted = goodput.attainment or goodput.share
        ordered = sorted(s["done_ms"] for s in samples) or [0.0]
        self.stdout.write(
            f"served latency from arrival: median {ordered[len(ordered) // 2]:.1f} ms, "
            f"p95 {ordered[int(len(ordered) * 0.95) - 1]:.1f} ms"
        )
        self.stdout.write(
            f"served over HTTP at {goodput.rps:.1f} req/s for {seconds:g} s: {len(samples)} requests "
            f"({load['failures']} failed), {attained:.3f} within {target:g} ms ({low:.3f}–{high:.3f}); "
            f"target share {goodput.share:.2f}, predicted {predicted:.3f}: "
            f"{(attained - predicted) * 100:+.1f} points"
        )
        # What one replica sustained there: the offered rate if the share held, else the rate of requests
        # within the target over the share. Replicas for a peak of 20 × goodput.
        sustained = min(goodput.rps, met / seconds / goodput.share) if samples else 0.0
        peak = 20 * goodput.rps
        planner = math.ceil(peak / goodput.rps)
        served = math.ceil(peak / sustained) if sustained > 0 else None
        self.stdout.write(
            f"replicas for a peak of {peak:.0f} req/s: planner {planner}, served run {served} "
            f"({(served / planner - 1) * 100 if served else float('nan'):+.0f}%)"
        )
