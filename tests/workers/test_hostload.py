"""The host load sampler (workers/hostload.py) with fake /proc readers, and once with the real ones."""

import json

import pytest

from workers.hostload import HostMonitor, cpu_jiffies
from workers.trust import HostLoad

TICKS = 100


def stat_line(busy: int, idle: int) -> str:
    """A /proc/stat whose busy jiffies are all user time, with two cores listed."""
    return (
        f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\n"
        f"cpu0 {busy // 2} 0 0 {idle // 2} 0 0 0 0 0 0\ncpu1 0 0 0 0 0 0 0 0 0 0\nintr 1 2 3\n"
    )


class FakeHost:
    """The counters a test moves forward by hand; the monitor reads them through injected readers."""

    def __init__(self, load: float = 1.0):
        self.now = 0.0
        self.busy = 0
        self.idle = 0
        self.own = 0.0
        self.load = load

    def advance(self, seconds: float, *, busy: int, idle: int, own: float = 0.0, load: float | None = None):
        self.now += seconds
        self.busy += busy
        self.idle += idle
        self.own += own
        self.load = self.load if load is None else load

    def monitor(self, **kwargs):
        return HostMonitor(
            read_stat=lambda: stat_line(self.busy, self.idle),
            read_load=lambda: self.load,
            own_cpu=lambda: self.own,
            clock=lambda: self.now,
            clock_ticks=TICKS,
            cpu_count=2,
            **kwargs,
        )


def test_parses_the_aggregate_cpu_line():
    text = "cpu  10 1 2 100 5 3 4 6 7 8\ncpu0 1 1 1 1 1 1 1 1 1 1\n"
    busy, total = cpu_jiffies(text)
    assert busy == 10 + 1 + 2 + 3 + 4 + 6  # user nice system irq softirq steal; guest is inside user
    assert total == busy + 100 + 5
    with pytest.raises(ValueError):
        cpu_jiffies("intr 1 2\n")


def test_other_processes_share_is_busy_time_minus_our_own_over_all_cores():
    # Two seconds on two cores = 400 jiffies; 300 busy, of which 100 (1 s) were this process: 200/400.
    fake = FakeHost(load=1.0)
    with fake.monitor() as host:
        fake.advance(2.0, busy=300, idle=100, own=1.0, load=3.5)
    load = host.load
    assert load == HostLoad(
        cpu_count=2,
        load_avg_1m=3.5,
        load_avg_1m_max=3.5,
        other_cpu_share=pytest.approx(0.5),
        other_cpu_share_peak=pytest.approx(0.5),
        seconds=2.0,
        samples=2,
    )
    assert json.loads(json.dumps(load.to_json())) == load.to_json()
    assert HostLoad.from_json(load.to_json()) == load


def test_samples_catch_a_burst_the_overall_share_dilutes():
    fake = FakeHost(load=0.5)
    with fake.monitor(peak_window_s=1.0) as host:
        fake.advance(0.5, busy=0, idle=100)
        host.sample()  # too soon after the start: not kept
        fake.advance(1.5, busy=0, idle=300, load=0.6)
        host.sample()
        fake.advance(1.0, busy=200, idle=0, load=2.4)  # a burst: both cores busy for a second
        host.sample()
        fake.advance(2.0, busy=0, idle=400, load=1.1)
    load = host.load
    assert load is not None
    assert load.other_cpu_share == pytest.approx(200 / 1000)
    assert load.other_cpu_share_peak == pytest.approx(1.0)
    assert load.load_avg_1m == 1.1 and load.load_avg_1m_max == 2.4
    assert load.samples == 4  # start, 2 s, 3 s, end


def test_own_work_is_not_counted_as_other_processes():
    fake = FakeHost()
    with fake.monitor() as host:
        fake.advance(1.0, busy=100, idle=100, own=1.0)  # one core busy, all of it this process
    assert host.load is not None and host.load.other_cpu_share == 0.0


def test_without_proc_stat_only_the_load_average_is_recorded():
    monitor = HostMonitor(read_stat=lambda: None, read_load=lambda: 4.1, cpu_count=2)
    with monitor as host:
        host.sample()
    assert host.load is not None
    assert host.load.other_cpu_share is None and host.load.other_cpu_share_peak is None
    assert host.load.load_avg_1m == 4.1


def test_real_readers_give_a_share_between_0_and_1():
    with HostMonitor(peak_window_s=0.0) as host:
        total = 0
        for i in range(200_000):
            total += i
        host.sample()
    load = host.load
    assert load is not None and load.cpu_count >= 1 and load.seconds > 0
    if load.other_cpu_share is not None:  # Linux
        assert 0.0 <= load.other_cpu_share <= 1.0
        assert load.other_cpu_share_peak is not None and 0.0 <= load.other_cpu_share_peak <= 1.0
