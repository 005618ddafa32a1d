"""fastmask benchmarks: every available backend against the reference and the algorithm it replaces.

Run ``python -m fastmask.bench`` (or ``fastmask-bench``). For each case (an operation at one shape)
it times fastmask's drop-in API under every backend available on the device, fastmask's reference
backend and the case's baseline on the same inputs. The baseline is Transformers4Rec's algorithm
(row ``t4rec``: the installed ``transformers4rec`` when it imports, else ``fastmask._t4rec_baseline``,
T4Rec 23.12 restated), RecBole / hopwise BERT4Rec's per-user Python loop (row ``per-user loop``),
or none (Merlin Models' masking runs in TensorFlow only). It prints a table, checks the project's
performance goals and writes ``<out>/<device>.json``, ``.md`` and ``.png``.

Timing: every contender is first called once at tiny shapes (one-time costs: op registration,
imports), then per measurement one warm-up call (two for Triton, whose first call at a new shape
compiles) and the median of repeated calls; a warm-up call slower than ``--slow-seconds`` is the
only sample (runs = 1, marked in the table), which keeps the slow numpy reference affordable.
CPU: ``time.perf_counter`` with torch's default thread count. GPU: CUDA events around each call,
with the L2 cache flushed before it (a write of twice its size). The device's copy bandwidth (a
large ``copy_``) and read bandwidth (a large ``sum``) are measured in the same run as the roofline.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import fnmatch
import functools
import gc
import importlib
import importlib.util
import json
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from . import _backend, ops

DEFAULT_OUT = os.path.join("bench", "results")
TOP_KS = [10, 20]
HIDDEN_SIZE = 64
GiB = 1024**3
N_ITEMS = 50_000  # item ids of the masking cases are in [1, N_ITEMS)
T4REC = "t4rec"
PER_USER_LOOP = "per-user loop"
REFERENCE = "reference"
FLOOR = "floor"
# Backends that measure speed on each device: the Triton interpreter on CPU only checks correctness.
DEVICE_BACKENDS = {"cpu": ("reference", "cpp"), "cuda": ("reference", "cuda", "triton")}
COMPILING_BACKENDS = ("triton",)  # their first call at a new shape may compile kernels
BACKEND_COLORS = {T4REC: "tab:red", REFERENCE: "tab:blue", "cpp": "tab:green", "cuda": "tab:purple",
                  "triton": "tab:orange", PER_USER_LOOP: "tab:brown", FLOOR: "0.6"}


# -- what is timed -------------------------------------------------------------------------------
@dataclass
class Case:
    """One operation at one shape: how to build its inputs and what each contender calls.

    ``baseline_fn(t4rec_algorithms, inputs)`` returns the baseline's call, timed in the row named
    ``baseline``; a case without one (``baseline_fn=None``) compares fastmask with its reference only.
    """

    name: str  # unique id, e.g. "plm_train_large"
    op: str  # table label, e.g. "plm_train"
    shape: dict
    dtype: str
    make_inputs: Callable[[torch.device], dict]
    fastmask_fn: Callable[[dict], Callable[[], object]]
    baseline_fn: Optional[Callable[[object, dict], Callable[[], object]]]
    bytes_read: int
    bytes_written: int
    # (shape, dtype) of every output, for the floor: allocate each once and write it once.
    floor_outputs: list = field(default_factory=list)
    baseline: Optional[str] = T4REC

    @property
    def baseline_name(self) -> Optional[str]:
        return self.baseline if self.baseline_fn is not None else None

    @property
    def shape_str(self) -> str:
        return " ".join(f"{k}={_human(v) if isinstance(v, int) else v}" for k, v in self.shape.items())


def _human(n: int) -> str:
    for unit, size in (("M", 10**6), ("k", 10**3)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def make_item_ids(batch: int, length: int, device: torch.device, seed: int = 0, min_length: int = 1) -> torch.Tensor:
    """Right-padded ids: row lengths uniform in [min_length, L], items in [1, N_ITEMS), padding 0."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_length, length + 1, (batch, 1), generator=gen)
    ids = torch.randint(1, N_ITEMS, (batch, length), generator=gen)
    ids = ids.masked_fill(torch.arange(length)[None, :] >= lengths, 0)
    return ids.to(device)


def _masking_case(name, op, batch, length, klass, training, floor_outputs, extra_written=0):
    read = batch * length * 8
    written = sum(_numel(s) * _itemsize(d) for s, d in floor_outputs) + extra_written

    def fastmask_fn(inputs):
        from . import masking

        module = getattr(masking, klass)(hidden_size=HIDDEN_SIZE)
        return lambda: module.compute_masked_targets(inputs["ids"], training=training)

    def t4rec_fn(t4rec, inputs):
        module = getattr(t4rec.masking, klass)(hidden_size=HIDDEN_SIZE)
        return lambda: module.compute_masked_targets(inputs["ids"], training=training)

    return Case(
        name, op, {"B": batch, "L": length}, "int64",
        lambda device: {"ids": make_item_ids(batch, length, device)},
        fastmask_fn, t4rec_fn, read, written, floor_outputs,
    )


def _numel(shape) -> int:
    return int(np.prod(shape))


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _plm_train_case(name, batch, length):
    outputs = [((batch, length), torch.bool), ((batch, length), torch.int64),
               ((batch, length, length), torch.float32), ((batch, length, length), torch.float32)]
    return _masking_case(name, "plm_train", batch, length, "PermutationLanguageModeling", True, outputs)


def _plm_eval_case(name, batch, length):
    # target_mapping is an expanded identity (no bytes); perm_mask is a dense int64 (B, L, L).
    outputs = [((batch, length), torch.bool), ((batch, length), torch.int64),
               ((batch, length, length), torch.int64)]
    return _masking_case(name, "plm_eval", batch, length, "PermutationLanguageModeling", False, outputs)


def _mlm_train_case(name, batch, length):
    outputs = [((batch, length), torch.bool), ((batch, length), torch.int64)]
    case = _masking_case(name, "mlm_train", batch, length, "MaskedLanguageModeling", True, outputs)
    case.floor_outputs = []  # tiny outputs: the floor says nothing here
    return case


def _gumbel_case(name, rows, vocab, dtype):
    def make_inputs(device):
        return {"logits": make_scores(rows, vocab, device, 1, dtype)}

    def fastmask_fn(inputs):
        from .masking import ReplacementLanguageModeling

        module = ReplacementLanguageModeling(hidden_size=HIDDEN_SIZE)
        return lambda: module.sample_from_softmax(inputs["logits"])

    def t4rec_fn(t4rec, inputs):
        module = t4rec.masking.ReplacementLanguageModeling(hidden_size=HIDDEN_SIZE)
        return lambda: module.sample_from_softmax(inputs["logits"])

    return Case(
        name, "gumbel", {"P": rows, "V": vocab}, _dtype_name(dtype), make_inputs, fastmask_fn, t4rec_fn,
        rows * vocab * _itemsize(dtype), rows * 8,
    )


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}[dtype]


def make_scores(rows, vocab, device, seed, dtype=torch.float32):
    """Normal scores drawn on ``device`` itself (a (4096, 1M) matrix never goes through host memory)."""
    gen = torch.Generator(device).manual_seed(seed)
    return torch.randn(rows, vocab, generator=gen, device=device).to(dtype)


def _onehot_inputs(rows, vocab):
    def make_inputs(device):
        gen = torch.Generator().manual_seed(3)
        return {"scores": make_scores(rows, vocab, device, 2), "targets": torch.randint(0, vocab, (rows,), generator=gen).to(device)}

    return make_inputs


def _metric_modules(namespace, onehot: bool):
    return [getattr(namespace, name)(top_ks=list(TOP_KS), labels_onehot=onehot)
            for name in ("NDCGAt", "RecallAt", "AvgPrecisionAt")]


def _metrics_case(name, rows, vocab, onehot):
    """NDCG/Recall/AP at TOP_KS updated on one batch, as T4Rec's evaluation does (one-hot or multi-hot
    labels); fastmask's three share the batch's rank pass, T4Rec's each run their own top-k."""
    if onehot:
        make_inputs = _onehot_inputs(rows, vocab)
        label_key, read = "targets", rows * vocab * 4 + rows * 8
    else:
        def make_inputs(device):
            gen = torch.Generator().manual_seed(4)
            labels = torch.zeros(rows, vocab)
            relevant = torch.randint(1, 11, (rows,), generator=gen)  # 1..10 relevant items per row
            columns = torch.randint(0, vocab, (rows, 10), generator=gen)
            keep = torch.arange(10)[None, :] < relevant[:, None]
            labels[torch.arange(rows)[:, None].expand(-1, 10)[keep], columns[keep]] = 1.0
            return {"scores": make_scores(rows, vocab, device, 2), "labels": labels.to(device)}

        label_key, read = "labels", 2 * rows * vocab * 4

    def update_all(metrics, inputs):
        def run():
            # Each run is a new batch: new tensor objects (views of the same data), ranked afresh.
            scores, labels = inputs["scores"][:], inputs[label_key][:]
            for metric in metrics:
                metric.update(scores, labels)
        return run

    def fastmask_fn(inputs):
        return update_all(_metric_modules(importlib.import_module("fastmask.ranking_metric"), onehot), inputs)

    def t4rec_fn(t4rec, inputs):
        return update_all(_metric_modules(t4rec.metrics, onehot), inputs)

    kind = "one-hot" if onehot else "multi-hot"
    return Case(
        name, f"metrics_{'onehot' if onehot else 'multihot'}", {"N": rows, "V": vocab, "labels": kind}, "fp32",
        make_inputs, fastmask_fn, t4rec_fn, read, rows * len(TOP_KS) * 4 * 3,
    )


def _ranks_case(name, rows, vocab):
    """Rank of each row's target: fastmask's target_ranks op vs T4Rec's top-k path (one-hot + topk + gather)."""

    def fastmask_fn(inputs):
        items = inputs["targets"][:, None]
        return lambda: ops.target_ranks(inputs["scores"], items)

    def t4rec_fn(t4rec, inputs):
        ks = torch.LongTensor(TOP_KS)

        def run():
            labels = t4rec.utils.tranform_label_to_onehot(inputs["targets"], inputs["scores"].shape[1])
            return t4rec.utils.extract_topk(ks, inputs["scores"], labels)
        return run

    return Case(
        name, "ranks_onehot", {"N": rows, "V": vocab}, "fp32", _onehot_inputs(rows, vocab), fastmask_fn, t4rec_fn,
        rows * vocab * 4 + rows * 8, rows * 8,
    )


BERT4REC_MASK_RATIO = 0.2
# Random batches only: the loop runs at one seed, so it could not mix in RecBole's last-item batches,
# which cost far less than random ones.
BERT4REC_FT_RATIO = 0.0
BERT4REC_SEED = 1234  # the loop takes the seed as an int; its cost does not depend on it


def _bert4rec_case(name, batch, length):
    """RecBole / hopwise BERT4Rec ``mask_itemseq`` on a batch (max_seq_length = L) vs its per-user loop."""
    mask_item_length = int(BERT4REC_MASK_RATIO * length)

    def fastmask_fn(inputs):
        from .sequence import BERT4RecMasking

        masking = BERT4RecMasking(N_ITEMS, BERT4REC_MASK_RATIO, length, BERT4REC_FT_RATIO)
        return lambda: masking(inputs["ids"])

    def loop_fn(_, inputs):
        from .reference.philox import bernoulli_threshold
        from .reference.sequence import bert4rec_mask_loop

        threshold, ft_threshold = bernoulli_threshold(BERT4REC_MASK_RATIO), bernoulli_threshold(BERT4REC_FT_RATIO)
        return lambda: bert4rec_mask_loop(
            inputs["ids"], None, BERT4REC_SEED, N_ITEMS, threshold, mask_item_length, ft_threshold
        )

    return Case(
        name, "bert4rec_mask", {"B": batch, "L": length, "n_items": N_ITEMS, "mask_ratio": BERT4REC_MASK_RATIO,
                           "ft_ratio": BERT4REC_FT_RATIO},
        "int64", lambda device: {"ids": make_item_ids(batch, length, device)}, fastmask_fn, loop_fn,
        batch * length * 8, (batch * length + 3 * batch * mask_item_length) * 8, baseline=PER_USER_LOOP,
    )


def _merlin_case(name, batch, length):
    """Merlin Models ``SequenceMaskRandom`` training targets; Merlin's own is TensorFlow: no baseline."""

    def fastmask_fn(inputs):
        from .sequence import MerlinMaskRandom

        module = MerlinMaskRandom(hidden_size=HIDDEN_SIZE)
        return lambda: module.compute_masked_targets(inputs["ids"], training=True)

    return Case(
        name, "merlin_mask_random", {"B": batch, "L": length}, "int64",
        # Merlin Models rejects sequences of fewer than 2 items.
        lambda device: {"ids": make_item_ids(batch, length, device, min_length=2)}, fastmask_fn, None,
        batch * length * 8, batch * length * (1 + 8), baseline=None,
    )


def _sampler_case(name, max_n_samples, max_id, n_labels, fixed_size):
    """``LogUniformSampler.sample`` for a batch of labels vs T4Rec's (multinomial with replacement + unique)."""

    def make_inputs(device):
        gen = torch.Generator().manual_seed(6)
        return {"labels": torch.randint(0, max_id, (n_labels,), generator=gen).to(device)}

    def fastmask_fn(inputs):
        from .sequence import LogUniformSampler

        labels = inputs["labels"]
        sampler = LogUniformSampler(max_n_samples, max_id, fixed_size=fixed_size).to(labels.device)
        return lambda: sampler.sample(labels)

    def t4rec_fn(t4rec, inputs):
        labels = inputs["labels"]
        sampler = t4rec.sampler(max_n_samples, max_id).to(labels.device)
        return lambda: sampler.sample(labels)

    # Reads the labels and one probability per label and per sample; writes samples (int64) and probabilities.
    return Case(
        name, "log_uniform_sample" + ("_fixed" if fixed_size else ""),
        {"labels": n_labels, "max_n_samples": max_n_samples, "max_id": max_id}, "int64",
        make_inputs, fastmask_fn, t4rec_fn,
        n_labels * (8 + 4) + max_n_samples * 4, n_labels * 4 + max_n_samples * (8 + 4),
    )


def build_cases(device_type: str, quick: bool) -> list[Case]:
    """The default set. ``quick``: the same cases at tiny shapes (a smoke run, not a measurement)."""
    if quick:
        return [
            _plm_train_case("plm_train_small", 8, 12),
            _plm_train_case("plm_train_large", 16, 24),
            _mlm_train_case("mlm_train_small", 8, 12),
            _mlm_train_case("mlm_train_large", 16, 24),
            _plm_eval_case("plm_eval_large", 16, 24),
            _gumbel_case("gumbel_fp32", 8, 512, torch.float32),
            *([_gumbel_case("gumbel_bf16", 8, 512, torch.bfloat16)] if device_type == "cuda" else []),
            _metrics_case("metrics_onehot", 32, 1000, onehot=True),
            _metrics_case("metrics_multihot", 16, 1000, onehot=False),
            _ranks_case("ranks_onehot", 32, 1000),
            _bert4rec_case("bert4rec_l200", 8, 20),
            _bert4rec_case("bert4rec_l50", 16, 10),
            _merlin_case("merlin_random", 8, 20),
            _sampler_case("sampler", 20, 1000, 16, fixed_size=False),
            _sampler_case("sampler_fixed", 20, 1000, 16, fixed_size=True),
        ]
    cases = [
        _plm_train_case("plm_train_small", 256, 20),
        _plm_train_case("plm_train_large", 512, 200),
        _mlm_train_case("mlm_train_small", 256, 20),
        _mlm_train_case("mlm_train_large", 512, 200),
        _plm_eval_case("plm_eval_large", 512, 200),
    ]
    if device_type == "cuda":
        cases += [
            _gumbel_case("gumbel_fp32", 4096, 100_000, torch.float32),
            _gumbel_case("gumbel_bf16", 4096, 100_000, torch.bfloat16),
            _metrics_case("metrics_onehot", 4096, 1_000_000, onehot=True),
            _metrics_case("metrics_multihot", 1024, 50_000, onehot=False),
            _ranks_case("ranks_onehot", 4096, 1_000_000),
        ]
    else:
        cases += [
            _gumbel_case("gumbel_fp32", 2048, 50_000, torch.float32),
            _metrics_case("metrics_onehot", 2048, 50_000, onehot=True),
            _metrics_case("metrics_multihot", 512, 50_000, onehot=False),
            _ranks_case("ranks_onehot", 2048, 50_000),
        ]
    cases += [
        _bert4rec_case("bert4rec_l200", 256, 200),
        _bert4rec_case("bert4rec_l50", 2048, 50),
        _merlin_case("merlin_random", 512, 200),
        _sampler_case("sampler", 1000, 1_000_000, 2048, fixed_size=False),
        _sampler_case("sampler_fixed", 1000, 1_000_000, 2048, fixed_size=True),
    ]
    return cases


def select_cases(cases: list[Case], pattern: Optional[str]) -> list[Case]:
    """Cases whose name or op matches ``pattern`` (a glob such as ``plm_*``, or a substring)."""
    if not pattern:
        return cases
    def matches(text):
        return fnmatch.fnmatch(text, pattern) or pattern in text
    return [case for case in cases if matches(case.name) or matches(case.op)]


# -- goals ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Goal:
    """``metric`` of ``backend`` on ``case`` compared with ``target`` (>= unless ``at_most``)."""

    device: str
    backend: str
    case: str
    metric: str  # ratio_vs_t4rec | time_over_floor | write_fraction_of_copy | read_fraction_of_read
    target: float
    at_most: bool = False

    @property
    def text(self) -> str:
        what = {
            "ratio_vs_t4rec": "speed-up vs T4Rec",
            "time_over_floor": "time / floor",
            "write_fraction_of_copy": "output write bandwidth / copy bandwidth",
            "read_fraction_of_read": "input read bandwidth / read bandwidth",
        }[self.metric]
        target = f"{self.target:.0%}" if "fraction" in self.metric else f"{self.target:g}x"
        return f"{self.backend} {self.case}: {what} {'<=' if self.at_most else '>='} {target}"


GOALS = [
    Goal("cpu", "cpp", "plm_train_small", "ratio_vs_t4rec", 100),
    Goal("cpu", "cpp", "plm_train_large", "time_over_floor", 1.5, at_most=True),
    Goal("cpu", "cpp", "gumbel_fp32", "ratio_vs_t4rec", 8),
    Goal("cpu", "cpp", "metrics_onehot", "ratio_vs_t4rec", 20),
    Goal("cuda", "triton", "plm_train_large", "ratio_vs_t4rec", 500),
    Goal("cuda", "triton", "plm_train_large", "write_fraction_of_copy", 0.6),
    Goal("cuda", "triton", "gumbel_fp32", "ratio_vs_t4rec", 8),
    Goal("cuda", "triton", "gumbel_fp32", "read_fraction_of_read", 0.8),
    Goal("cuda", "triton", "gumbel_bf16", "ratio_vs_t4rec", 8),
    Goal("cuda", "triton", "gumbel_bf16", "read_fraction_of_read", 0.8),
    Goal("cuda", "triton", "ranks_onehot", "ratio_vs_t4rec", 5),
]


def evaluate_goals(device_type: str, rows: list[dict], quick: bool) -> list[dict]:
    """One entry per goal of ``device_type``: its measured value and met (True/False, None = not measured)."""
    results = []
    for goal in GOALS:
        if goal.device != device_type:
            continue
        entry = {"goal": goal.text, "backend": goal.backend, "case": goal.case, "metric": goal.metric,
                 "target": goal.target, "at_most": goal.at_most, "value": None, "met": None}
        row = next((r for r in rows if r["case"] == goal.case and r["backend"] == goal.backend), None)
        if quick:
            entry["status"] = "n/a (--quick shapes)"
        elif row is None:
            entry["status"] = f"n/a (backend {goal.backend} or case {goal.case} not run)"
        elif row.get(goal.metric) is None:
            entry["status"] = f"n/a ({row.get('error') or 'not measured'})"
        else:
            value = row[goal.metric]
            met = value <= goal.target if goal.at_most else value >= goal.target
            entry.update(value=value, met=met, status="met" if met else "NOT met")
        results.append(entry)
    return results


# -- timing --------------------------------------------------------------------------------------
@dataclass
class TimingPolicy:
    min_runs: int
    max_runs: int
    budget_s: float  # time aimed at per measurement, warm-up excluded
    slow_s: float  # a call this slow is measured once

    @classmethod
    def default(cls, device_type: str, quick: bool, repeats: Optional[int], slow_s: Optional[float]):
        if quick:
            policy = cls(1, 3, 0.05, 0.5)
        elif device_type == "cuda":
            policy = cls(5, 100, 1.0, 5.0)
        else:
            policy = cls(3, 20, 2.0, 5.0)
        if repeats is not None:
            policy.max_runs = max(1, repeats)
            policy.min_runs = min(policy.min_runs, policy.max_runs)
        if slow_s is not None:
            policy.slow_s = slow_s
        return policy

    def runs_for(self, estimate_s: float) -> int:
        return max(self.min_runs, min(self.max_runs, int(self.budget_s / max(estimate_s, 1e-9))))


class Timer:
    """Seconds per call of ``fn`` on one device, under a ``TimingPolicy``."""

    def __init__(self, device: torch.device, policy: TimingPolicy):
        self.device = device
        self.policy = policy
        self.flush = None
        if device.type == "cuda":
            l2_bytes = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 64 * 2**20)
            self.flush = torch.empty(2 * l2_bytes, dtype=torch.int8, device=device)

    def measure(self, fn: Callable[[], object], first_call_compiles: bool = False) -> list[float]:
        """One warm-up call (two when the first compiles kernels); a slow one is the only sample."""
        first = self._runs(fn, 1)[0]
        if first_call_compiles:
            first = self._runs(fn, 1)[0]
        if first >= self.policy.slow_s:
            return [first]
        return self._runs(fn, self.policy.runs_for(first))

    def _runs(self, fn, runs: int) -> list[float]:
        if self.device.type != "cuda":
            samples = []
            for _ in range(runs):
                start = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - start)
            return samples
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
        for start, end in zip(starts, ends):
            self.flush.zero_()  # cold L2
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(self.device)
        return [start.elapsed_time(end) / 1e3 for start, end in zip(starts, ends)]


def floor_fn(case: Case, device: torch.device) -> Callable[[], object]:
    """Allocate every output of ``case`` and write it once."""
    def run():
        outputs = [torch.empty(shape, dtype=dtype, device=device) for shape, dtype in case.floor_outputs]
        for out in outputs:
            out.fill_(1)
        return outputs
    return run


def measure_bandwidth(timer: Timer, device: torch.device, quick: bool) -> dict:
    """Copy (read + write) and read bandwidth of large buffers on ``device``, in GB/s."""
    size = (16 if quick else (1024 if device.type == "cuda" else 256)) * 2**20
    src = torch.ones(size // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    copy_s = statistics.median(timer.measure(lambda: dst.copy_(src)))
    read_s = statistics.median(timer.measure(lambda: src.sum()))
    del src, dst
    return {"buffer_bytes": size, "copy_gbps": 2 * size / copy_s / 1e9, "read_gbps": size / read_s / 1e9}


# -- T4Rec ---------------------------------------------------------------------------------------
@dataclass
class T4RecAlgorithms:
    name: str
    masking: object
    metrics: object
    utils: object
    sampler: type  # LogUniformSampler


def load_t4rec(choice: str = "auto") -> T4RecAlgorithms:
    """Transformers4Rec itself when it imports (``auto``/``installed``), else the restated baseline."""
    if choice in ("auto", "installed"):
        try:
            import transformers4rec
            from transformers4rec.torch import masking, ranking_metric
            from transformers4rec.torch.model.prediction_task import LogUniformSampler
            from transformers4rec.torch.utils import torch_utils
        except ImportError as error:
            if choice == "installed":
                raise SystemExit(
                    f"fastmask-bench: --t4rec installed, but transformers4rec does not import: {error}"
                ) from None
        else:
            return T4RecAlgorithms(
                f"transformers4rec {getattr(transformers4rec, '__version__', '?')} (installed)",
                masking, ranking_metric, torch_utils, LogUniformSampler,
            )
    from . import _t4rec_baseline as baseline

    return T4RecAlgorithms(
        "fastmask._t4rec_baseline (Transformers4Rec 23.12 algorithms restated; transformers4rec not installed)",
        baseline, baseline, baseline, baseline.LogUniformSampler,
    )


# -- running -------------------------------------------------------------------------------------
def device_backends(device: torch.device, requested: Optional[list[str]]) -> list[str]:
    """fastmask backends to time on ``device``: the requested ones, else every fast one available."""
    available = _backend.backends()
    if requested:
        unknown = [name for name in requested if name not in _backend.BACKENDS]
        if unknown:
            raise SystemExit(f"fastmask-bench: unknown backend(s) {', '.join(unknown)}; "
                             f"expected some of {', '.join(_backend.BACKENDS)}")
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


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _time_one(timer: Timer, make_fn: Callable[[], Callable[[], object]], device, compiles: bool) -> dict:
    try:
        samples = timer.measure(make_fn(), first_call_compiles=compiles)
    except Exception as error:  # an OOM or a missing module is reported in the row, not fatal
        message = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:160]}"
    else:
        return {"median_s": statistics.median(samples), "runs": len(samples), "samples_s": samples}
    _free(device)  # after the traceback, which holds the failed call's tensors, is gone
    return {"error": message}


def _row(case: Case, backend: str, timing: dict) -> dict:
    row = {"case": case.name, "op": case.op, "shape": case.shape, "shape_str": case.shape_str,
           "dtype": case.dtype, "backend": backend, "baseline": case.baseline_name,
           "bytes_read": 0 if backend == FLOOR else case.bytes_read, "bytes_written": case.bytes_written}
    row.update(timing)
    return row


def _contenders(case: Case, backends: list[str], device, t4rec: T4RecAlgorithms, inputs: dict):
    """(name, context, make_fn) for the baseline, each fastmask backend and the floor; make_fn() returns the call."""
    contenders = []
    if case.baseline_fn is not None:
        contenders.append((case.baseline, contextlib.nullcontext, lambda: case.baseline_fn(t4rec, inputs)))
    contenders += [(name, functools.partial(_backend.use_backend, name), lambda: case.fastmask_fn(inputs))
                   for name in backends]
    if case.floor_outputs:
        contenders.append((FLOOR, contextlib.nullcontext, lambda: floor_fn(case, device)))
    return contenders


def prime(cases: list[Case], backends, device, t4rec) -> None:
    """Call every contender once at tiny shapes, so one-time costs (op registration on first dispatch,
    lazy imports, kernel compilation) stay out of the timings. Failures show up in the measurement."""
    twins = {case.name: case for case in build_cases(device.type, quick=True)}
    for case in cases:
        twin = twins.get(case.name, case)
        inputs = twin.make_inputs(device)
        for _, context, make_fn in _contenders(twin, backends, device, t4rec, inputs):
            try:
                with context():
                    make_fn()()
            except Exception:
                pass
    _free(device)


def run_cases(cases, backends, device, timer, t4rec, progress) -> list[dict]:
    rows = []
    for case in cases:
        inputs = case.make_inputs(device)
        for backend, context, make_fn in _contenders(case, backends, device, t4rec, inputs):
            progress.set_postfix_str(f"{case.name} / {backend}")
            with context():
                timing = _time_one(timer, make_fn, device, compiles=backend in COMPILING_BACKENDS)
                rows.append(_row(case, backend, timing))
            progress.update(1)
        del inputs
        _free(device)
    return rows


def add_derived(rows: list[dict], bandwidth: dict) -> None:
    """Ratios vs reference / the case's baseline / floor, GB/s, and fractions of the bandwidths measured
    in the run. ``ratio_vs_t4rec`` (what the goals read) is the ratio vs a T4Rec baseline, else None."""
    by_case = {}
    for row in rows:
        by_case.setdefault(row["case"], {})[row["backend"]] = row
    for row in rows:
        same_case = by_case[row["case"]]
        median = row.get("median_s")
        baseline = same_case.get(row.get("baseline"), {})
        others = {name: same_case.get(name, {}).get("median_s") for name in (REFERENCE, FLOOR)}
        others["baseline"] = baseline.get("median_s")
        compared = median is not None and row["backend"] != FLOOR
        row["ratio_vs_reference"] = others[REFERENCE] / median if compared and others[REFERENCE] else None
        row["ratio_vs_baseline"] = others["baseline"] / median if compared and others["baseline"] else None
        row["ratio_vs_t4rec"] = row["ratio_vs_baseline"] if row.get("baseline") == T4REC else None
        row["time_over_floor"] = median / others[FLOOR] if compared and others[FLOOR] else None
        row["floor_s"] = others[FLOOR]
        row["reference_runs"] = same_case.get(REFERENCE, {}).get("runs")
        row["baseline_runs"] = baseline.get("runs")
        measured = median is not None
        row["gbps"] = (row["bytes_read"] + row["bytes_written"]) / median / 1e9 if measured else None
        row["write_gbps"] = row["bytes_written"] / median / 1e9 if measured else None
        row["read_gbps"] = row["bytes_read"] / median / 1e9 if measured else None
        row["pct_copy_bw"] = 100 * row["gbps"] / bandwidth["copy_gbps"] if measured else None
        row["write_fraction_of_copy"] = row["write_gbps"] / bandwidth["copy_gbps"] if measured else None
        row["read_fraction_of_read"] = row["read_gbps"] / bandwidth["read_gbps"] if measured else None


# -- environment ---------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm)\)|@.*$|\bcpu\b|\bprocessor\b|\b\d+-core\b", " ", text, flags=re.IGNORECASE)
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "unknown"


def device_label(device: torch.device) -> str:
    """File-name stem: ``cpu-<cpu model>`` or the GPU's name, both without the host name."""
    if device.type == "cuda":
        return _slug(torch.cuda.get_device_name(device))
    return f"cpu-{_slug(cpu_model())}"


def _package_version(name: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device, backends: list[str], t4rec: T4RecAlgorithms, policy: TimingPolicy) -> dict:
    from . import __version__

    env = {
        "fastmask": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _package_version("triton"),
        "numpy": np.__version__,
        "torchmetrics": _package_version("torchmetrics"),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device.type,
        "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "backends_available": _backend.backends(),
        "backends_timed": backends,
        "t4rec_algorithm": t4rec.name,
        "timing": (
            "CUDA events, L2 flushed before every call" if device.type == "cuda"
            else "time.perf_counter, torch's default thread count"
        ) + f"; after a warm-up call (two for {'/'.join(COMPILING_BACKENDS)}), the median of "
        f"{policy.min_runs}-{policy.max_runs} runs; a warm-up call >= {policy.slow_s:g} s is the only run",
        "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return env


# -- reporting -----------------------------------------------------------------------------------
def _fmt_time(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _fmt_number(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def _fmt_ratio(value: Optional[float], single_run: bool = False) -> str:
    if value is None:
        return "-"
    return f"{_fmt_number(value)}x" + (" (1 run)" if single_run else "")


def table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    gpu = report["environment"]["device"] == "cuda"
    header = ["op", "shape", "dtype", "backend", "median", "runs", "vs reference", "baseline", "vs baseline",
              "GB/s", "floor", "time/floor"] + (["% copy BW"] if gpu else [])
    lines = []
    for row in report["rows"]:
        error = row.get("error")
        cells = [
            row["op"], row["shape_str"], row["dtype"], row["backend"],
            "error" if error else _fmt_time(row.get("median_s")),
            str(row.get("runs", "-")),
            _fmt_ratio(row.get("ratio_vs_reference"), row.get("reference_runs") == 1),
            row.get("baseline") or "none",
            _fmt_ratio(row.get("ratio_vs_baseline"), row.get("baseline_runs") == 1),
            _fmt_number(row.get("gbps")),
            _fmt_time(row.get("floor_s")) if row["backend"] != FLOOR else "-",
            f"{row['time_over_floor']:.2f}" if row.get("time_over_floor") is not None else "-",
        ]
        if gpu:
            cells.append(f"{row['pct_copy_bw']:.0f}%" if row.get("pct_copy_bw") is not None else "-")
        lines.append(cells)
    return header, lines


def format_text_table(header: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    def fmt(cells):
        return "  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths)).rstrip()
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(cells) for cells in lines])


def format_markdown_table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |" for cells in lines]
    return "\n".join(out)


def _goal_lines(report: dict) -> tuple[list[str], list[list[str]]]:
    header = ["goal", "measured", "status"]
    lines = []
    for goal in report["goals"]:
        value = goal["value"]
        if value is None:
            shown = "-"
        elif "fraction" in goal["metric"]:
            shown = f"{value:.0%}"
        else:
            shown = _fmt_ratio(value) if goal["metric"] == "ratio_vs_t4rec" else f"{value:.2f}"
        lines.append([goal["goal"], shown, goal["status"]])
    return header, lines


def _errors(report: dict) -> list[str]:
    return [f"{row['case']} / {row['backend']}: {row['error']}" for row in report["rows"] if row.get("error")]


def format_markdown(report: dict) -> str:
    env, bandwidth = report["environment"], report["bandwidth"]
    device = env["gpu_name"] or env["cpu_model"]
    parts = [
        f"# fastmask benchmark: {device}",
        "",
        f"- Date (UTC): {env['timestamp_utc']}; run took {report['duration_s']:.0f} s"
        + (" (`--quick`: tiny shapes, not a measurement)" if report["settings"]["quick"] else ""),
        f"- fastmask {env['fastmask']}, torch {env['torch']}, triton {env['triton']}, numpy {env['numpy']}, "
        f"Python {env['python']}, {env['platform']}",
        f"- CPU: {env['cpu_model']}, {env['cpu_count']} logical cores, torch threads {env['torch_threads']}"
        + (f"; GPU: {env['gpu_name']} (CUDA {env['cuda']})" if env["gpu_name"] else ""),
        f"- Backends timed: {', '.join(env['backends_timed'])} (available: {', '.join(env['backends_available'])})",
        f"- T4Rec algorithm timed: {env['t4rec_algorithm']}",
        f"- Bandwidth measured in this run: copy {bandwidth['copy_gbps']:.1f} GB/s (read + write), "
        f"read {bandwidth['read_gbps']:.1f} GB/s",
        f"- Timing: {env['timing']}",
        "",
        "## Results",
        "",
        "`vs reference` and `vs baseline` are speed-ups (their time / this time); `(1 run)` marks a ratio "
        "whose denominator was timed once. `baseline` names the case's baseline row: `t4rec` (Transformers4Rec's "
        f"algorithm), `{PER_USER_LOOP}` (RecBole / hopwise BERT4Rec's Python loop over users, on fastmask's "
        "draws) or `none` (Merlin Models' masking is TensorFlow only). `floor` allocates every output and "
        "writes it once; `time/floor` is this time over it. GB/s counts the bytes the operation must read "
        "and write once.",
        "",
        format_markdown_table(*table_rows(report)),
        "",
        "## Goals",
        "",
        format_markdown_table(*_goal_lines(report)),
    ]
    errors = _errors(report)
    if errors:
        parts += ["", "## Errors", ""] + [f"- {line}" for line in errors]
    return "\n".join(parts) + "\n"


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in report["rows"] if row.get("median_s")]
    cases = list(dict.fromkeys((row["case"], f"{row['op']}\n{row['shape_str']} {row['dtype']}") for row in rows))
    backends = list(dict.fromkeys(row["backend"] for row in rows))
    height = 0.8 / max(1, len(backends))
    fig, ax = plt.subplots(figsize=(11, 1.0 + 0.9 * len(cases)))
    for b_index, backend in enumerate(backends):
        ys, xs = [], []
        for c_index, (case, _) in enumerate(cases):
            row = next((r for r in rows if r["case"] == case and r["backend"] == backend), None)
            if row is not None:
                ys.append(c_index + (b_index - (len(backends) - 1) / 2) * height)
                xs.append(row["median_s"] * 1e3)
        ax.barh(ys, xs, height=height, label=backend, color=BACKEND_COLORS.get(backend, "black"))
    ax.set_yticks(range(len(cases)))
    ax.set_yticklabels([label for _, label in cases], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median time per call (ms, log scale)")
    env = report["environment"]
    ax.set_title(f"fastmask on {env['gpu_name'] or env['cpu_model']} (T4Rec = {env['t4rec_algorithm'].split(' (')[0]})",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(report: dict, out_dir: str, stem: str) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"{stem}.{ext}") for ext in ("json", "md", "png")}
    with open(paths["json"], "w") as handle:
        json.dump(report, handle, indent=1)
    with open(paths["md"], "w") as handle:
        handle.write(format_markdown(report))
    if importlib.util.find_spec("matplotlib") is None:
        print("no plot: matplotlib is not installed (pip install 'fastmask[bench]')", file=sys.stderr)
        del paths["png"]
    else:
        plot(report, paths["png"])
    return paths


# -- command line --------------------------------------------------------------------------------
class _NoProgress:
    def update(self, n):
        pass

    def set_postfix_str(self, text):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(total=total, desc="fastmask-bench", unit="timing", dynamic_ncols=True)
    return _NoProgress()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fastmask-bench",
        description="Time fastmask's backends against its reference and the algorithms it replaces "
                    "(Transformers4Rec's, RecBole's BERT4Rec loop).",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        default="cuda" if torch.cuda.is_available() else "cpu",
                        help="device to benchmark (default: cuda when available, else cpu)")
    parser.add_argument("--backend", default=None,
                        help="comma-separated fastmask backends to time (default: every fast one available on "
                             "the device); the reference and each case's baseline are always timed")
    parser.add_argument("--quick", action="store_true",
                        help="tiny shapes and few runs: checks that everything runs, measures nothing")
    parser.add_argument("--only", default=None, metavar="PATTERN",
                        help="run only cases whose name or op matches PATTERN (glob or substring), e.g. 'plm_*'")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--repeats", type=_positive_int, default=None, help="most timed runs per measurement")
    parser.add_argument("--slow-seconds", type=float, default=None,
                        help="a call slower than this is timed once (default 5; 0.5 with --quick)")
    parser.add_argument("--t4rec", choices=("auto", "installed", "baseline"), default="auto",
                        help="T4Rec algorithm to time: the installed transformers4rec when importable (auto), "
                             "require it (installed), or fastmask._t4rec_baseline (baseline)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    """Run the benchmark described by ``args``; returns the report (also written to ``args.out``)."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("fastmask-bench: --device cuda but torch sees no GPU")
    started = time.perf_counter()
    requested = [name.strip() for name in args.backend.split(",") if name.strip()] if args.backend else None
    backends = device_backends(device, requested)
    cases = select_cases(build_cases(device.type, args.quick), args.only)
    if not cases:
        raise SystemExit(f"fastmask-bench: no case matches --only {args.only!r}")
    try:  # now, not after the timings
        os.makedirs(args.out, exist_ok=True)
    except OSError as error:
        raise SystemExit(f"fastmask-bench: cannot create the --out folder {args.out!r}: {error.strerror}") from None
    if not os.access(args.out, os.W_OK):
        raise SystemExit(f"fastmask-bench: the --out folder {args.out!r} is not writable")
    t4rec = load_t4rec(args.t4rec)
    policy = TimingPolicy.default(device.type, args.quick, args.repeats, args.slow_seconds)
    timer = Timer(device, policy)

    total = 2 + sum((case.baseline_fn is not None) + len(backends) + bool(case.floor_outputs) for case in cases)
    progress = _progress(total, not args.no_progress)
    progress.set_postfix_str("warm-up")
    prime(cases, backends, device, t4rec)
    progress.update(1)
    progress.set_postfix_str("bandwidth")
    bandwidth = measure_bandwidth(timer, device, args.quick)
    progress.update(1)
    rows = run_cases(cases, backends, device, timer, t4rec, progress)
    progress.close()

    add_derived(rows, bandwidth)
    report = {
        "schema_version": 1,
        "environment": environment(device, backends, t4rec, policy),
        "settings": {"device": args.device, "backend": args.backend, "quick": args.quick, "only": args.only,
                     "repeats": args.repeats, "slow_seconds": policy.slow_s, "t4rec": args.t4rec},
        "bandwidth": bandwidth,
        "rows": rows,
        "goals": evaluate_goals(device.type, rows, args.quick),
    }
    report["duration_s"] = time.perf_counter() - started
    stem = device_label(device) + ("-quick" if args.quick else "")
    report["files"] = write_outputs(report, args.out, stem)
    return report


def main(argv=None) -> int:
    report = run(parse_args(argv))
    env = report["environment"]
    print(f"\nfastmask {env['fastmask']} on {env['gpu_name'] or env['cpu_model']} "
          f"({env['torch_threads']} torch threads); T4Rec algorithm: {env['t4rec_algorithm']}")
    bandwidth = report["bandwidth"]
    print(f"copy bandwidth {bandwidth['copy_gbps']:.1f} GB/s, read bandwidth {bandwidth['read_gbps']:.1f} GB/s\n")
    print(format_text_table(*table_rows(report)))
    print()
    print(format_text_table(*_goal_lines(report)))
    errors = _errors(report)
    for line in errors:
        print(f"error: {line}")
    print(f"\nwrote {', '.join(report['files'].values())} in {report['duration_s']:.0f} s")
    return 1 if errors else 0  # the report is written either way; a failed contender fails the run


if __name__ == "__main__":
    sys.exit(main())
