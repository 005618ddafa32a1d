"""The project's performance goals, and whether a run meets them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .cases import MASKING_CALLS, T4REC

RUN = "run"  # a goal on the whole run rather than on one case
GPU_RUN_BUDGET_S = 120.0


@dataclass(frozen=True)
class Goal:
    """``metric`` of ``backend`` on ``case`` compared with ``target`` (>= unless ``at_most``)."""

    device: str
    backend: Optional[str]
    case: str
    metric: str
    target: float
    at_most: bool = False

    @property
    def text(self) -> str:
        what = {
            "ratio_vs_t4rec": "speed-up vs T4Rec",
            "time_over_floor": "time / floor",
            "write_fraction_of_copy": "output write bandwidth / copy bandwidth",
            "median_s": "eager per-call latency (100 calls in a row / 100)",
            "duration_s": "fastmask-bench run time",
            "ratio_vs_baseline": "speed-up vs its baseline",
            "peak_mem_delta_bytes": "extra peak memory",
        }[self.metric]
        if "fraction" in self.metric:
            target = f"{self.target:.0%}"
        elif self.metric.endswith("_bytes"):
            target = f"{self.target / 2**30:g} GiB"
        elif self.metric.endswith("_s"):
            target = _seconds(self.target)
        else:
            target = f"{self.target:g}x"
        where = "the whole run" if self.case == RUN else f"{self.backend} {self.case}"
        return f"{where}: {what} {'<=' if self.at_most else '>='} {target}"


def _seconds(value: float) -> str:
    return f"{value * 1e6:g} us" if value < 1e-3 else f"{value:g} s"


GOALS = [
    # CPU, C++ backend.
    Goal("cpu", "cpp", "plm_train_small", "ratio_vs_t4rec", 100),
    Goal("cpu", "cpp", "plm_train_large", "time_over_floor", 1.5, at_most=True),
    Goal("cpu", "cpp", "gumbel_fp32", "ratio_vs_t4rec", 8),
    Goal("cpu", "cpp", "metrics_onehot", "ratio_vs_t4rec", 20),
    Goal("cpu", "cpp", "ranks_hidden", "ratio_vs_baseline", 1),
    Goal("cpu", "cpp", "topk_hidden", "ratio_vs_baseline", 1),
    Goal("cpu", "cpp", "ranks_hidden_large", "peak_mem_delta_bytes", 0.5 * 2**30, at_most=True),
    Goal("cpu", "cpp", "topk_hidden_large", "peak_mem_delta_bytes", 0.5 * 2**30, at_most=True),
    # GPU (H100/H200), the default Triton backend.
    *[Goal("cuda", "triton", name, "median_s", 60e-6, at_most=True) for name in MASKING_CALLS],
    Goal("cuda", "triton", "plm_train_large", "write_fraction_of_copy", 0.6),
    Goal("cuda", "triton", "plm_train_large", "ratio_vs_t4rec", 500),
    Goal("cuda", "triton", "plm_eval_large", "ratio_vs_t4rec", 5),
    Goal("cuda", "triton", "plm_eval_large", "write_fraction_of_copy", 0.5),
    Goal("cuda", "triton", "gumbel_fp32", "ratio_vs_t4rec", 8),
    Goal("cuda", "triton", "gumbel_bf16", "ratio_vs_t4rec", 8),
    Goal("cuda", "triton", "metrics_onehot", "ratio_vs_t4rec", 25),
    Goal("cuda", "triton", "ranks_onehot", "ratio_vs_t4rec", 5),
    Goal("cuda", "triton", "ranks_hidden_bf16", "ratio_vs_baseline", 2),
    Goal("cuda", "triton", "ranks_hidden_fp32", "ratio_vs_baseline", 2),
    Goal("cuda", None, RUN, "duration_s", GPU_RUN_BUDGET_S, at_most=True),
]


def evaluate_goals(device_type: str, rows: list[dict], *, quick: bool, selected: bool,
                   duration_s: float, t4rec_loaded: bool) -> list[dict]:
    """One entry per goal of ``device_type``: its value and status (met / NOT met / n/a (why)).

    ``selected``: the run timed a subset of the cases (``--only``); ``duration_s``: the run's time
    so far, for the run-time goal.
    """
    results = []
    for goal in GOALS:
        if goal.device != device_type:
            continue
        entry = {"goal": goal.text, "backend": goal.backend, "case": goal.case, "metric": goal.metric,
                 "target": goal.target, "at_most": goal.at_most, "value": None, "met": None}
        row = next((r for r in rows if r["case"] == goal.case and r["backend"] == goal.backend), None)
        value, why = None, None
        if quick:
            why = "--quick shapes"
        elif goal.case == RUN:
            value, why = (None, "--only ran a subset") if selected else (duration_s, None)
        elif goal.metric == "ratio_vs_t4rec" and not t4rec_loaded:
            why = "no T4Rec baseline: only the reference was compared"
        elif row is None:
            why = f"backend {goal.backend} or case {goal.case} not run"
        elif row.get("fallback"):
            why = f"{goal.backend} has no kernel for every op of the call: {row['fallback']}"
        elif row.get(goal.metric) is None:
            why = row.get("error") or row.get("skipped") or _why_no_t4rec(goal, rows) or "not measured"
        else:
            value = row[goal.metric]
        if value is None:
            entry["status"] = f"n/a ({why})"
        else:
            met = value <= goal.target if goal.at_most else value >= goal.target
            entry.update(value=value, met=met, status="met" if met else "NOT met")
        results.append(entry)
    return results


def _why_no_t4rec(goal: Goal, rows: list[dict]) -> Optional[str]:
    """For a ratio to T4Rec that is missing: what happened to the case's T4Rec row."""
    if goal.metric != "ratio_vs_t4rec":
        return None
    t4rec = next((r for r in rows if r["case"] == goal.case and r["backend"] == T4REC), None)
    if t4rec is None:
        return "no T4Rec row"
    if t4rec.get("error"):
        return f"T4Rec failed: {t4rec['error']}"
    if t4rec.get("skipped"):
        return f"T4Rec {t4rec['skipped']}"
    return None
