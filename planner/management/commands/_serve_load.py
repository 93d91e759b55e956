"""Open-loop Poisson load with locust in headless library mode, run as its own process by serve_check
(locust patches the standard library with gevent on import, so it never loads in the serving process).

python planner/management/commands/_serve_load.py URL RATE SECONDS SEED OUT.json [--stream]

Arrivals are scheduled from a seeded RNG and fired without waiting for earlier responses; each request's
latency runs from its scheduled arrival (so a slow client counts against the server, as LoadGen does).
With --stream the response is read as Server-Sent Events: the first event is the first token.
"""

import json
import random
import sys
import time

import gevent
from locust import FastHttpUser, constant, task
from locust.env import Environment


def main(url: str, rate: float, seconds: float, seed: int, out: str, stream: bool) -> None:
    samples: list[dict[str, float]] = []

    class Dispatcher(FastHttpUser):
        host = url
        wait_time = constant(0)
        concurrency = 512  # connections: an open loop must never wait for a free one

        def one(self, scheduled: float) -> None:
            with self.client.get("/infer", stream=stream, catch_response=True) as response:
                first = None
                if stream:
                    for chunk in response.stream:
                        first = time.perf_counter() if first is None and chunk else first
                done = time.perf_counter()
                response.success()
            samples.append(
                {"first_ms": ((first or done) - scheduled) * 1000, "done_ms": (done - scheduled) * 1000}
            )

        @task
        def fire(self) -> None:
            rng, moment = random.Random(seed), time.perf_counter()
            end = moment + seconds
            pending = []
            while moment < end:
                gevent.sleep(max(0.0, moment - time.perf_counter()))
                pending.append(gevent.spawn(self.one, moment))
                moment += rng.expovariate(rate)
            gevent.joinall(pending, timeout=30)
            self.environment.runner.quit()

    env = Environment(user_classes=[Dispatcher])
    runner = env.create_local_runner()
    runner.start(1, spawn_rate=1)
    gevent.spawn_later(seconds + 60, runner.quit)  # stops by itself, whatever happens
    runner.greenlet.join()
    with open(out, "w") as f:
        json.dump({"samples": samples, "failures": env.stats.total.num_failures}, f)


if __name__ == "__main__":
    url, rate, seconds, seed, out = sys.argv[1:6]
    main(url, float(rate), float(seconds), int(seed), out, "--stream" in sys.argv)
