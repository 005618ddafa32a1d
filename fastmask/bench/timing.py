"""How calls are timed, and the memory they use.

* Per call (``Timer.per_call``): after one warm-up call (two where the first compiles kernels), the
  median of repeated single calls. CPU: ``time.perf_counter``. GPU: CUDA events around each call,
  the L2 cache flushed (a write of twice its size) before it.
* Back to back (``Timer.back_to_back``): the time of ``batch_calls`` calls in a row (100 by default)
  divided by their number: what a training loop pays per call, host overhead included. GPU: CUDA
  events around the whole batch.
* CUDA-graph replay (``Timer.graph_replay``): the call captured once, then the time of
  ``batch_calls`` replays / their number: the kernels' time without the host.

A first call slower than the policy's ``slow_s`` is the only sample. The number of runs follows from
the time budget of the measurement.
"""
from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch


@dataclass
class TimingPolicy:
    min_runs: int
    max_runs: int
    budget_s: float  # time aimed at per measurement, warm-up excluded
    slow_s: float  # a first call this slow is the only sample
    batch_calls: int  # calls per back-to-back sample

    @classmethod
    def default(cls, device_type: str, quick: bool, repeats: Optional[int] = None, slow_s: Optional[float] = None):
        if quick:
            policy = cls(1, 3, 0.05, 0.5, 10)
        elif device_type == "cuda":
            policy = cls(5, 100, 0.5, 2.0, 100)
        else:
            policy = cls(3, 20, 2.0, 5.0, 100)
        if repeats is not None:
            policy.max_runs = max(1, repeats)
            policy.min_runs = min(policy.min_runs, policy.max_runs)
        if slow_s is not None:
            policy.slow_s = slow_s
        return policy

    def runs_for(self, sample_s: float, budget_s: Optional[float] = None) -> int:
        budget = self.budget_s if budget_s is None else min(budget_s, self.budget_s)
        return max(self.min_runs, min(self.max_runs, int(budget / max(sample_s, 1e-9))))


@dataclass
class Measurement:
    samples_s: list  # seconds per call, one per run
    calls_per_sample: int = 1
    single: bool = False  # the first call was slower than slow_s: it is the only sample

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)


class Timer:
    """Seconds per call of ``fn`` on one device, under a ``TimingPolicy``."""

    def __init__(self, device: torch.device, policy: TimingPolicy):
        self.device = device
        self.policy = policy
        self.cuda = device.type == "cuda"
        self.flush = None
        if self.cuda:
            l2_bytes = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 64 * 2**20)
            self.flush = torch.empty(2 * l2_bytes, dtype=torch.int8, device=device)

    # -- the three ways --------------------------------------------------------------------------
    def per_call(self, fn: Callable[[], object], compiles: bool = False,
                 budget_s: Optional[float] = None) -> Measurement:
        first = self._warm_up(fn, compiles)
        if first >= self.policy.slow_s:
            return Measurement([first], single=True)
        return Measurement(self._batches(fn, self.policy.runs_for(first, budget_s), 1, cold=True))

    def back_to_back(self, fn: Callable[[], object], compiles: bool = False,
                     budget_s: Optional[float] = None) -> Measurement:
        first = self._warm_up(fn, compiles)
        if first >= self.policy.slow_s:
            return Measurement([first], single=True)
        calls = self._calls_per_batch(first, budget_s)
        return Measurement(self._batches(fn, self.policy.runs_for(first * calls, budget_s), calls), calls)

    def graph_replay(self, fn: Callable[[], object], budget_s: Optional[float] = None) -> Measurement:
        """``fn`` captured in a CUDA graph (after warm-up calls on a side stream), then replayed."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        first = self._time_batch(graph.replay, 1)
        calls = self._calls_per_batch(first, budget_s)
        samples = self._batches(graph.replay, self.policy.runs_for(first * calls, budget_s), calls)
        del graph
        return Measurement(samples, calls)

    # -- pieces ----------------------------------------------------------------------------------
    def _warm_up(self, fn, compiles: bool) -> float:
        first = self._time_batch(fn, 1)
        if compiles:  # the first call at a new shape compiled kernels: time a second one
            first = self._time_batch(fn, 1)
        return first

    def _calls_per_batch(self, call_s: float, budget_s: Optional[float]) -> int:
        """``batch_calls``, unless that many would not fit ``min_runs`` times in the budget."""
        budget = self.policy.budget_s if budget_s is None else min(budget_s, self.policy.budget_s)
        fitting = int(budget / self.policy.min_runs / max(call_s, 1e-9))
        return max(1, min(self.policy.batch_calls, fitting))

    def _time_batch(self, fn, calls: int, cold: bool = False) -> float:
        return self._batches(fn, 1, calls, cold)[0]

    def _batches(self, fn, runs: int, calls: int, cold: bool = False) -> list[float]:
        """``runs`` samples, each the time of ``calls`` calls in a row / ``calls``."""
        if not self.cuda:
            samples = []
            for _ in range(runs):
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                samples.append((time.perf_counter() - start) / calls)
            return samples
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
        for start, end in zip(starts, ends, strict=True):
            if cold:
                self.flush.zero_()
            start.record()
            for _ in range(calls):
                fn()
            end.record()
        torch.cuda.synchronize(self.device)
        return [start.elapsed_time(end) / 1e3 / calls for start, end in zip(starts, ends, strict=True)]


# -- memory --------------------------------------------------------------------------------------
def _status_bytes(field: str) -> Optional[int]:
    """A ``kB`` field of /proc/self/status (Linux), in bytes."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    """Set the process's RSS high-water mark (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """The memory high-water mark during a block: ``torch.cuda.max_memory_allocated`` on a GPU, the
    process's resident set high-water mark on the CPU. ``result``: the peak (bytes) and the peak
    above what was in use when the block began (None where it cannot be read)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.result: dict = {"peak_mem_bytes": None, "peak_mem_delta_bytes": None}

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.rss_peak_reset = False
        else:
            self.base = _status_bytes("VmRSS")
            self.rss_peak_reset = self.base is not None and _reset_rss_peak()
            self.maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc_info):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.rss_peak_reset:
            peak = _status_bytes("VmHWM")
        else:  # without a reset only a new process-wide peak says something
            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = maxrss * 1024 if maxrss > self.maxrss_before else None
        if peak is not None:
            self.result = {"peak_mem_bytes": peak,
                           "peak_mem_delta_bytes": max(0, peak - self.base) if self.base is not None else None}
        return False


def peak_memory_method(device: torch.device) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated"
    return "resident set high-water mark (VmHWM, reset before each contender)"


# -- roofline ------------------------------------------------------------------------------------
def measure_bandwidth(timer: Timer, device: torch.device, quick: bool) -> dict:
    """Copy (read + write) and read bandwidth of large buffers on ``device``, in GB/s."""
    size = (16 if quick else (1024 if device.type == "cuda" else 256)) * 2**20
    src = torch.ones(size // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    copy_s = timer.per_call(lambda: dst.copy_(src)).median_s
    read_s = timer.per_call(lambda: src.sum()).median_s
    return {"buffer_bytes": size, "copy_gbps": 2 * size / copy_s / 1e9, "read_gbps": size / read_s / 1e9}
