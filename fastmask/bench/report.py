"""The benchmark's report: its environment, the text and markdown tables, the plot and the files."""
from __future__ import annotations

import datetime
import importlib.util
import json
import os
import platform
import re
import sys
from typing import Optional

import numpy as np
import torch

import fastmask

from .cases import BACK_TO_BACK, RECBOLE, T4REC
from .runner import COMPILING, FLOOR, REFERENCE
from .timing import TimingPolicy, peak_memory_method

BACKEND_COLORS = {T4REC: "tab:red", RECBOLE: "tab:brown", REFERENCE: "tab:blue", "cpp": "tab:green",
                  "cuda": "tab:purple", "triton": "tab:orange", FLOOR: "0.6", "read bound": "0.75",
                  "philox bound": "0.45"}


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


def environment(device: torch.device, backends: list[str], baseline_notes: dict, policy: TimingPolicy) -> dict:
    gpu = device.type == "cuda"
    return {
        "fastmask": fastmask.__version__,
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
        "gpu_name": torch.cuda.get_device_name(device) if gpu else None,
        "cuda": torch.version.cuda if gpu else None,
        "backends_available": fastmask.backends(),
        "backends_timed": backends,
        "baselines": baseline_notes,
        "timing": (
            f"per-call cases: {'CUDA events around each call, L2 flushed before it' if gpu else 'time.perf_counter'}, "
            f"after a warm-up call (two for {'/'.join(COMPILING)}), the median of {policy.min_runs}-{policy.max_runs} "
            f"runs; a first call >= {policy.slow_s:g} s is the only run. Back-to-back cases: the time of "
            f"{policy.batch_calls} calls in a row / {policy.batch_calls} (fewer for a slow contender)"
            + ("; beside it, the same call captured once in a CUDA graph and replayed" if gpu else "")
        ),
        "peak_memory": peak_memory_method(device),
        "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


# -- formatting ----------------------------------------------------------------------------------
def fmt_time(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= 0.9995 * scale:  # what rounds to 1000 of a unit is 1 of the next
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


def _fmt_bytes(value: Optional[int]) -> str:
    if value is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value} B"


def _time_cell(row: dict) -> str:
    if row.get("error"):
        return "error"
    if row.get("skipped"):
        return "not timed"
    return fmt_time(row.get("median_s"))


def _runs_cell(row: dict) -> str:
    if row.get("runs") is None:
        return "-"
    calls = row.get("calls_per_sample") or 1
    return f"{row['runs']}x{calls}" if calls > 1 else str(row["runs"])


def _graph_cell(row: dict) -> str:
    if row.get("graph_error"):
        return "capture failed"
    return fmt_time(row.get("graph_median_s"))


def _limit_cells(row: dict) -> tuple[str, str]:
    """(the floor or binding bound, this time over it)."""
    if row.get("binding_bound"):
        limit, ratio = f"{row['binding_bound'].split()[0]} {fmt_time(row['bound_s'])}", row.get("time_over_bound")
    elif row.get("floor_s") and row["backend"] != FLOOR:
        limit, ratio = f"floor {fmt_time(row['floor_s'])}", row.get("time_over_floor")
    else:
        return "-", "-"
    return limit, f"{ratio:.2f}" if ratio is not None else "-"


def _baseline_cell(row: dict) -> str:
    if row.get("baseline"):
        return row["baseline"]
    return f"{row['baseline_missing']}: not loaded" if row.get("baseline_missing") else "none"


def table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    gpu = report["environment"]["device"] == "cuda"
    header = (["op", "shape", "dtype", "backend", "time", "runs"] + (["graph replay"] if gpu else [])
              + ["vs reference", "baseline", "vs baseline", "GB/s", "floor / bound", "time / it"]
              + (["% copy BW"] if gpu else []) + ["peak mem"])
    lines = []
    for row in report["rows"]:
        limit, over = _limit_cells(row)
        backend = row["backend"] + (" (fell back)" if row.get("fallback") else "")
        cells = [row["op"], row["shape_str"], row["dtype"], backend, _time_cell(row), _runs_cell(row)]
        if gpu:
            cells.append(_graph_cell(row))
        cells += [
            _fmt_ratio(row.get("ratio_vs_reference"), row.get("reference_runs") == 1),
            _baseline_cell(row),
            _fmt_ratio(row.get("ratio_vs_baseline"), row.get("baseline_runs") == 1),
            _fmt_number(row.get("gbps")), limit, over,
        ]
        if gpu:
            cells.append(f"{row['pct_copy_bw']:.0f}%" if row.get("pct_copy_bw") is not None else "-")
        cells.append(_fmt_bytes(row.get("peak_mem_delta_bytes")))
        lines.append(cells)
    return header, lines


def per_call_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """The back-to-back masking calls: per-call time per module and backend (graph replay on a GPU)."""
    gpu = report["environment"]["device"] == "cuda"
    header = ["call", "shape", "backend", "per call"] + (["graph replay"] if gpu else []) + ["T4Rec per call"]
    lines = []
    for row in report["rows"]:
        if row["timing"] != BACK_TO_BACK or row["kind"] != "backend":
            continue
        t4rec = next((r for r in report["rows"] if r["case"] == row["case"] and r["backend"] == T4REC), {})
        cells = [row["op"], row["shape_str"], row["backend"], _time_cell(row)]
        if gpu:
            cells.append(_graph_cell(row))
        cells.append(_time_cell(t4rec) if t4rec else "-")
        lines.append(cells)
    return header, lines


def format_text_table(header: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]

    def fmt(cells):
        return "  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(cells) for cells in lines])


def format_markdown_table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |" for cells in lines]
    return "\n".join(out)


def goal_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    header = ["goal", "measured", "status"]
    lines = []
    for goal in report["goals"]:
        value = goal["value"]
        if value is None:
            shown = "-"
        elif "fraction" in goal["metric"]:
            shown = f"{value:.0%}"
        elif goal["metric"].endswith("_s"):
            shown = fmt_time(value)
        else:
            shown = _fmt_ratio(value) if goal["metric"] == "ratio_vs_t4rec" else f"{value:.2f}"
        lines.append([goal["goal"], shown, goal["status"]])
    return header, lines


def errors(report: dict) -> list[str]:
    return [f"{row['case']} / {row['backend']}: {row['error']}" for row in report["rows"] if row.get("error")]


def notes(report: dict) -> list[str]:
    """What was not timed, and calls that could not be captured in a CUDA graph."""
    lines = [f"{row['case']} / {row['backend']}: {row['skipped']}" for row in report["rows"] if row.get("skipped")]
    lines += [f"{row['case']} / {row['backend']}: CUDA-graph capture failed: {row['graph_error']}"
              for row in report["rows"] if row.get("graph_error")]
    lines += [f"{row['case']} / {row['backend']}: no {row['backend']} kernel, so this row times another "
              f"backend: {row['fallback']}" for row in report["rows"] if row.get("fallback")]
    return lines


def baseline_lines(report: dict) -> list[str]:
    baselines = report["environment"]["baselines"]
    lines = [f"- Transformers4Rec (`{T4REC}` rows): {baselines[T4REC]}",
             f"- RecBole (`{RECBOLE}` rows): {baselines[RECBOLE]}"]
    if not report["t4rec_loaded"]:
        lines.append("- **Only fastmask's reference was compared**: no Transformers4Rec was loaded, so the goals "
                     "against T4Rec are n/a.")
    return lines


def format_markdown(report: dict) -> str:
    env, bandwidth = report["environment"], report["bandwidth"]
    gpu = env["device"] == "cuda"
    parts = [
        f"# fastmask benchmark: {env['gpu_name'] or env['cpu_model']}",
        "",
        f"- Date (UTC): {env['timestamp_utc']}; run took {report['duration_s']:.0f} s"
        + (" (`--quick`: tiny shapes, not a measurement)" if report["settings"]["quick"] else ""),
        f"- fastmask {env['fastmask']}, torch {env['torch']}, triton {env['triton']}, numpy {env['numpy']}, "
        f"Python {env['python']}, {env['platform']}",
        f"- CPU: {env['cpu_model']}, {env['cpu_count']} logical cores, torch threads {env['torch_threads']}"
        + (f"; GPU: {env['gpu_name']} (CUDA {env['cuda']})" if gpu else ""),
        f"- Backends timed: {', '.join(env['backends_timed'])} (available: {', '.join(env['backends_available'])})",
        *baseline_lines(report),
        f"- Bandwidth measured in this run: copy {bandwidth['copy_gbps']:.1f} GB/s (read + write), "
        f"read {bandwidth['read_gbps']:.1f} GB/s",
        f"- Timing: {env['timing']}",
        f"- Peak memory: {env['peak_memory']}; the table shows the peak above what was in use before the contender ran",
        "",
        "## Results",
        "",
        "`vs reference` and `vs baseline` are speed-ups (their time / this time); `(1 run)` marks a ratio whose "
        "denominator was timed once. `baseline` names the case's baseline row: `t4rec` (Transformers4Rec's own "
        "code), `recbole` (RecBole's BERT4Rec transform) or `none` (Merlin Models' masking is TensorFlow only). "
        "`runs` is samples x calls per sample. `floor` allocates every output and writes it once; for Gumbel "
        "sampling `read bound` reads the logits once and `philox bound` makes the P x V Philox-4x32-10 draws "
        "and nothing else; `time / it` is this time over the floor or over the larger bound (the one that "
        "binds). GB/s counts the bytes the operation must read and write once."
        + (" `graph replay` is the time per call of the same call captured in a CUDA graph and replayed: "
           "the kernels without the host." if gpu else ""),
        "",
        format_markdown_table(*table_rows(report)),
        "",
        "## Per-call time of the masking modules",
        "",
        format_markdown_table(*per_call_rows(report)),
        "",
        "## Goals",
        "",
        format_markdown_table(*goal_rows(report)),
    ]
    if notes(report):
        parts += ["", "## Notes: not timed, not captured, fallbacks", ""] + [f"- {line}" for line in notes(report)]
    if errors(report):
        parts += ["", "## Errors", ""] + [f"- {line}" for line in errors(report)]
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
    ax.set_title(f"fastmask on {env['gpu_name'] or env['cpu_model']}", fontsize=10)
    if backends:
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
