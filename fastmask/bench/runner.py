"""Running the cases: who is timed on each (contenders), within the run's time budget, and the
figures derived from the timings (ratios, bandwidth, floors and bounds)."""
from __future__ import annotations

import contextlib
import gc
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastmask
from fastmask import ops

from .baselines import Baselines
from .cases import BACK_TO_BACK, T4REC, Case, build_cases
from .timing import PeakMemory, Timer

REFERENCE = "reference"
FLOOR = "floor"
READ_BOUND = "read bound"
PHILOX_BOUND = "philox bound"
BOUNDS = (READ_BOUND, PHILOX_BOUND)
# Backends that measure speed on each device: the Triton interpreter on CPU only checks correctness.
DEVICE_BACKENDS = {"cpu": ("reference", "cpp"), "cuda": ("reference", "cuda", "triton")}
COMPILING = ("triton", PHILOX_BOUND)  # their first call at a new shape may compile kernels
# On a GPU the reference (the oracle: Philox draws in numpy on the host, sorts) would take minutes on
# the large cases: it is not timed when a case moves more than this.
REFERENCE_MAX_BYTES_GPU = 32 * 2**20
RESERVED_S = 10.0  # of a run's time budget, kept for the imports before the run and writing the report


@dataclass
class Contender:
    name: str  # the row's "backend" column
    kind: str  # "baseline", "backend", "floor" or "bound"
    make_fn: Callable[[], Callable[[], object]]
    backend: Optional[str] = None  # fastmask backend the calls run on
    skip: Optional[str] = None  # why it is not timed

    def context(self):
        return fastmask.use_backend(self.backend) if self.backend else contextlib.nullcontext()

    @property
    def graphed(self) -> bool:
        """Timed under CUDA-graph replay too: fastmask's GPU backends on back-to-back cases."""
        return self.kind == "backend" and self.name != REFERENCE


def device_backends(device: torch.device, requested: Optional[list[str]]) -> list[str]:
    """fastmask backends to time on ``device``: the requested ones, else every fast one available;
    the reference always."""
    available = fastmask.backends()
    if requested:
        missing = [name for name in requested if name not in available]
        if missing:
            raise SystemExit(f"fastmask-bench: backend(s) {', '.join(missing)} not available here "
                             f"(available: {', '.join(available)})")
        names = list(dict.fromkeys(requested))  # a backend named twice would be two rows of one case
    else:
        names = [name for name in available if name in DEVICE_BACKENDS[device.type]]
    if REFERENCE not in names:
        names.insert(0, REFERENCE)
    return names


def floor_fn(case: Case, device: torch.device) -> Callable[[], object]:
    """Allocate every output of ``case`` and write it once."""
    def run():
        outputs = [torch.empty(shape, dtype=dtype, device=device) for shape, dtype in case.floor_outputs]
        for out in outputs:
            out.fill_(1)
        return outputs
    return run


def read_bound_fn(logits: torch.Tensor) -> Callable[[], object]:
    """One read of the logits (a max reduction)."""
    return lambda: torch.amax(logits)


def philox_bound_fn(logits: torch.Tensor) -> Callable[[], object]:
    """The P x V Philox draws of a Gumbel sample, and nothing else (``philox_bound``)."""
    from ..reference.philox import STREAM_GUMBEL
    from .philox_bound import philox_draws, splits_for

    rows, columns = logits.shape
    seed = torch.tensor([1234], dtype=torch.int64, device=logits.device)
    splits = splits_for(rows, columns, logits.device)
    return lambda: philox_draws(rows, columns, seed, STREAM_GUMBEL, splits=splits)


def contenders(case: Case, backends: list[str], device: torch.device, baselines: Baselines,
               inputs: dict) -> list[Contender]:
    """The case's baseline (when loaded), each fastmask backend, then its floor or bounds."""
    out = []
    library = baselines.get(case.baseline)
    if library is not None:
        out.append(Contender(case.baseline, "baseline", lambda: case.baseline_fn(library, inputs)))
    for name in backends:
        skip = case.reference_skip if name == REFERENCE else None
        if name == REFERENCE and device.type == "cuda" and case.bytes_moved > REFERENCE_MAX_BYTES_GPU:
            skip = (f"not timed: on a GPU the reference (the oracle) is timed up to {REFERENCE_MAX_BYTES_GPU // 2**20} "
                    "MiB moved; at this size it takes minutes")
        out.append(Contender(name, "backend", lambda: case.fastmask_fn(inputs), backend=name, skip=skip))
    if case.floor_outputs:
        out.append(Contender(FLOOR, "floor", lambda: floor_fn(case, device)))
    if case.bounds:
        out.append(Contender(READ_BOUND, "bound", lambda: read_bound_fn(inputs["logits"])))
        out.append(Contender(PHILOX_BOUND, "bound", lambda: philox_bound_fn(inputs["logits"])))
    return out


class _FastmaskOps(TorchDispatchMode):
    """Records the names of the fastmask ops a call dispatches (under a dispatch mode every op call
    goes through the dispatcher)."""

    def __init__(self):
        super().__init__()
        self.names: set = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "fastmask":
            self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def fallbacks(call: Callable[[], object], backend: str, device_type: str) -> list[str]:
    """The fastmask ops that ``call`` dispatches and ``backend`` has no kernel for, each with the
    backend it runs on instead: such a row times that backend, not the one it is named after. Run
    under ``fastmask.use_backend(backend)``."""
    with _FastmaskOps() as recorder:
        call()
    ran = {name: ops.TABLE[name].kernel(device_type)[0] for name in recorder.names if name in ops.TABLE}
    return [f"{name} runs on {runs_on}" for name, runs_on in sorted(ran.items()) if runs_on != backend]


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _error(error: Exception) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:160]}"


class Progress:
    """One line per step on stderr, with the time since the start."""

    def __init__(self, enabled: bool, started: float):
        self.enabled = enabled
        self.started = started

    def __call__(self, message: str) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self.started
            print(f"fastmask-bench [{elapsed:6.1f} s] {message}", file=sys.stderr, flush=True)


class Runner:
    """Times every contender of every case on one device, within an optional time budget: when it is
    spent, the contenders left are reported as not timed instead of being waited for."""

    def __init__(self, device, backends, baselines: Baselines, timer: Timer, progress: Progress,
                 deadline: Optional[float] = None, budget_s: Optional[float] = None):
        self.device = device
        self.backends = backends
        self.baselines = baselines
        self.timer = timer
        self.progress = progress
        self.deadline = deadline  # time.perf_counter() value
        self.budget_s = budget_s
        self.fallbacks: dict = {}  # (case, backend) -> ops that ran on another backend

    def prime(self, cases: list[Case]) -> None:
        """Call every contender once at tiny shapes, so one-time costs (imports, first dispatch,
        kernel compilation) stay out of the timings. Failures show up in the measurement."""
        twins = {case.name: case for case in build_cases(self.device.type, quick=True)}
        for case in cases:
            twin = twins.get(case.name, case)
            inputs = twin.make_inputs(self.device)
            for contender in contenders(twin, self.backends, self.device, self.baselines, inputs):
                if contender.skip:
                    continue
                try:
                    with contender.context():
                        call = contender.make_fn()
                        if contender.kind == "backend":
                            self.fallbacks[case.name, contender.name] = fallbacks(call, contender.name,
                                                                                 self.device.type)
                        else:
                            call()
                except Exception:
                    pass
            del inputs
        free(self.device)

    def run(self, cases: list[Case]) -> list[dict]:
        rows = []
        left = sum(self._measurements(case) for case in cases)
        for number, case in enumerate(cases, 1):
            inputs = {} if self._spent() else case.make_inputs(self.device)  # no inputs for rows not timed
            for contender in contenders(case, self.backends, self.device, self.baselines, inputs):
                row = self._row(case, contender)
                if contender.skip:
                    row["skipped"] = contender.skip
                elif self._spent():
                    row["skipped"] = f"not timed: the run's time budget ({self.budget_s:g} s) was spent"
                else:
                    measurements = 2 if self._graphed(case, contender) else 1
                    with contender.context():
                        row.update(self._time(case, contender, self._share(left)))
                    left -= measurements
                rows.append(row)
                self.progress(f"{number}/{len(cases)} {case.name} / {contender.name}: {_summary(row)}")
            del inputs
            free(self.device)
        return rows

    # -- pieces ----------------------------------------------------------------------------------
    def _graphed(self, case: Case, contender: Contender) -> bool:
        return case.timing == BACK_TO_BACK and self.device.type == "cuda" and contender.graphed

    def _measurements(self, case: Case) -> int:
        inputs: dict = {}  # contenders() only builds closures over it
        return sum(0 if c.skip else 1 + self._graphed(case, c)
                   for c in contenders(case, self.backends, self.device, self.baselines, inputs))

    def _spent(self) -> bool:
        return self.deadline is not None and time.perf_counter() >= self.deadline

    def _share(self, left: int) -> Optional[float]:
        """Time for one measurement: the budget left, shared by the measurements left."""
        if self.deadline is None:
            return None
        return max(0.02, (self.deadline - time.perf_counter()) / max(left, 1))

    def _row(self, case: Case, contender: Contender) -> dict:
        bytes_read = {FLOOR: 0, PHILOX_BOUND: 0}.get(contender.name, case.bytes_read)
        bytes_written = 0 if contender.kind == "bound" else case.bytes_written
        baseline_loaded = self.baselines.get(case.baseline) is not None
        return {
            "case": case.name, "op": case.op, "shape": case.shape, "shape_str": case.shape_str, "dtype": case.dtype,
            "backend": contender.name, "kind": contender.kind, "timing": case.timing,
            "baseline": case.baseline if baseline_loaded else None,
            "baseline_missing": case.baseline if case.baseline and not baseline_loaded else None,
            "bytes_read": bytes_read, "bytes_written": bytes_written,
            "fallback": "; ".join(self.fallbacks.get((case.name, contender.name), [])) or None,
        }

    def _time(self, case: Case, contender: Contender, budget_s: Optional[float]) -> dict:
        compiles = contender.name in COMPILING
        try:
            fn = contender.make_fn()
            with PeakMemory(self.device) as memory:
                if case.timing == BACK_TO_BACK:
                    measured = self.timer.back_to_back(fn, compiles, budget_s)
                else:
                    measured = self.timer.per_call(fn, compiles, budget_s)
        except Exception as error:  # an OOM or a missing module is reported in the row, not fatal
            message = _error(error)
            # A baseline that does not fit the GPU (T4Rec's dense one-hot labels at V=1M on an 80 GB
            # card) is a fact about the baseline, not a failure of the run.
            baseline_oom = contender.kind == "baseline" and isinstance(error, torch.cuda.OutOfMemoryError)
            del error
            free(self.device)  # after the traceback, which holds the failed call's tensors, is gone
            return {"skipped": f"not timed: out of memory ({message})"} if baseline_oom else {"error": message}
        result = {"median_s": measured.median_s, "runs": len(measured.samples_s), "samples_s": measured.samples_s,
                  "calls_per_sample": measured.calls_per_sample, "single_run": measured.single, **memory.result}
        if self._graphed(case, contender):
            result.update(self._graph(fn, budget_s))
        return result

    def _graph(self, fn, budget_s: Optional[float]) -> dict:
        try:
            measured = self.timer.graph_replay(fn, budget_s)
        except Exception as error:  # a call that cannot be captured says so beside its eager time
            message = _error(error)
            del error
            with contextlib.suppress(Exception):
                torch.cuda.synchronize(self.device)
            free(self.device)
            return {"graph_error": message}
        return {"graph_median_s": measured.median_s, "graph_runs": len(measured.samples_s),
                "graph_calls_per_sample": measured.calls_per_sample}


def _summary(row: dict) -> str:
    if row.get("skipped"):
        return row["skipped"]
    if row.get("error"):
        return f"error: {row['error']}"
    text = f"{row['median_s'] * 1e3:.4g} ms"
    if row.get("graph_median_s") is not None:
        text += f" (graph replay {row['graph_median_s'] * 1e3:.4g} ms)"
    return text


def add_derived(rows: list[dict], bandwidth: dict) -> None:
    """Ratios vs the reference / the case's baseline / the floor / the bound that binds, GB/s, and
    fractions of the bandwidths measured in the run. ``ratio_vs_t4rec`` (what the goals read) is
    the ratio vs a T4Rec baseline, else None."""
    by_case: dict = {}
    for row in rows:
        by_case.setdefault(row["case"], {})[row["backend"]] = row
    for row in rows:
        same_case = by_case[row["case"]]
        median = row.get("median_s")
        baseline = same_case.get(row.get("baseline") or "", {})
        medians = {name: other.get("median_s") for name, other in same_case.items()}
        median_of = medians.get
        compared = median is not None and row["kind"] in ("backend", "baseline")
        reference_s, baseline_s, floor_s = median_of(REFERENCE), baseline.get("median_s"), median_of(FLOOR)
        row["ratio_vs_reference"] = reference_s / median if compared and reference_s else None
        row["ratio_vs_baseline"] = baseline_s / median if compared and baseline_s else None
        row["ratio_vs_t4rec"] = row["ratio_vs_baseline"] if row.get("baseline") == T4REC else None
        row["floor_s"] = floor_s
        row["time_over_floor"] = median / floor_s if compared and floor_s else None
        bounds = {name: median_of(name) for name in BOUNDS if median_of(name)}
        binding = max(bounds, key=bounds.get) if bounds and len(bounds) == len(BOUNDS) else None
        row["binding_bound"] = binding
        row["bound_s"] = bounds[binding] if binding else None
        row["time_over_bound"] = median / bounds[binding] if compared and binding else None
        row["reference_runs"] = same_case.get(REFERENCE, {}).get("runs")
        row["baseline_runs"] = baseline.get("runs")
        moved = row["bytes_read"] + row["bytes_written"]
        measured = median is not None and moved > 0
        row["gbps"] = moved / median / 1e9 if measured else None
        row["write_gbps"] = row["bytes_written"] / median / 1e9 if measured else None
        row["read_gbps"] = row["bytes_read"] / median / 1e9 if measured else None
        row["pct_copy_bw"] = 100 * row["gbps"] / bandwidth["copy_gbps"] if measured else None
        row["write_fraction_of_copy"] = row["write_gbps"] / bandwidth["copy_gbps"] if measured else None
        row["read_fraction_of_read"] = row["read_gbps"] / bandwidth["read_gbps"] if measured else None
