"""How busy the host is while a measurement runs: the load average and the share of the CPU that other
processes use.

The share comes from the kernel's counters rather than from a list of processes: over the measurement,
the busy CPU time of the whole machine (``/proc/stat``, every core, steal time included) minus this
process's own CPU time (every thread of it), over the machine's total CPU time. No third-party package is
needed; where ``/proc/stat`` cannot be read (not Linux) the share is ``None`` and only the load average
is recorded. Every reader is injectable, so tests feed fake counters.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from workers.trust import HostLoad


def read_proc_stat() -> str | None:
    try:
        with open("/proc/stat") as f:
            return f.read()
    except OSError:
        return None


def read_load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def own_cpu_seconds() -> float:
    """CPU time, user and system, of every thread of this process."""
    return time.process_time()


def cpu_jiffies(stat: str) -> tuple[int, int]:
    """(busy, total) jiffies of all cores together from the aggregate ``cpu`` line of /proc/stat.

    Idle and iowait are idle; user, nice, system, irq, softirq and steal are busy (steal: a hypervisor
    ran another guest on our core, which slows a measurement as much as a local process does). guest and
    guest_nice are already counted in user and nice, so they are left out.
    """
    for line in stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1:9]] + [0] * (8 - len(fields[1:9]))
            user, nice, system, idle, iowait, irq, softirq, steal = values
            busy = user + nice + system + irq + softirq + steal
            return busy, busy + idle + iowait
    raise ValueError("/proc/stat has no aggregate 'cpu' line")


@dataclass(frozen=True)
class _Snapshot:
    at: float
    jiffies: tuple[int, int] | None
    own_seconds: float
    load: float | None


class HostMonitor:
    """Context manager that records the host's load over the block; ``sample()`` may be called while the
    block runs (e.g. between timing rounds) to catch a peak and the highest load average.

        with HostMonitor() as host:
            ...  # the measurement, calling host.sample() now and then
        host.load.to_json()  # {"load_avg_1m": ..., "cpu_count": ..., "other_cpu_share": ..., ...}

    ``peak_window_s``: the shortest stretch over which a peak share is computed (kernel counters tick 100
    times a second, so a shorter stretch is mostly rounding).
    """

    def __init__(
        self,
        *,
        read_stat: Callable[[], str | None] = read_proc_stat,
        read_load: Callable[[], float | None] = read_load_average,
        own_cpu: Callable[[], float] = own_cpu_seconds,
        clock: Callable[[], float] = time.monotonic,
        clock_ticks: int | None = None,
        cpu_count: int | None = None,
        peak_window_s: float = 1.0,
    ) -> None:
        self._read_stat = read_stat
        self._read_load = read_load
        self._own_cpu = own_cpu
        self._clock = clock
        self._ticks = clock_ticks or _clock_ticks()
        self._cpu_count = cpu_count or os.cpu_count() or 1
        self._peak_window_s = peak_window_s
        self._kept: list[_Snapshot] = []
        self._loads: list[float] = []
        self.load: HostLoad | None = None

    def _snapshot(self) -> _Snapshot:
        stat = self._read_stat()
        load = self._read_load()
        if load is not None:
            self._loads.append(load)
        return _Snapshot(
            at=self._clock(),
            jiffies=cpu_jiffies(stat) if stat is not None else None,
            own_seconds=self._own_cpu(),
            load=load,
        )

    def __enter__(self) -> HostMonitor:
        self._loads = []
        self._kept = [self._snapshot()]
        self.load = None
        return self

    def sample(self) -> None:
        """Read the counters now; kept only once ``peak_window_s`` has passed since the last kept reading."""
        if self._clock() - self._kept[-1].at >= self._peak_window_s:
            self._kept.append(self._snapshot())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        last = self._snapshot()
        first = self._kept[0]
        stretches = [(a, b) for a, b in zip(self._kept, self._kept[1:] + [last], strict=False)]
        peaks = [
            share
            for a, b in stretches
            if b.at - a.at >= self._peak_window_s and (share := self._other_share(a, b)) is not None
        ]
        overall = self._other_share(first, last)
        self.load = HostLoad(
            cpu_count=self._cpu_count,
            load_avg_1m=last.load,
            load_avg_1m_max=max(self._loads) if self._loads else None,
            other_cpu_share=overall,
            other_cpu_share_peak=max(peaks) if peaks else overall,
            seconds=last.at - first.at,
            samples=len(self._kept) + 1,
        )

    def _other_share(self, a: _Snapshot, b: _Snapshot) -> float | None:
        if a.jiffies is None or b.jiffies is None:
            return None
        total = (b.jiffies[1] - a.jiffies[1]) / self._ticks
        if total <= 0:
            return None
        busy = (b.jiffies[0] - a.jiffies[0]) / self._ticks
        others = busy - (b.own_seconds - a.own_seconds)
        # Kernel counters tick in whole jiffies while the process clock is finer: clamp the rounding.
        return min(1.0, max(0.0, others / total))


def _clock_ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100
