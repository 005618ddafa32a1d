"""``fastmask-bench`` / ``python -m fastmask.bench``: the command line."""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from . import goals as goals_module
from .baselines import BaselineError, Baselines, load_recbole, load_t4rec
from .cases import MATERIALISED, RECBOLE, T4REC, build_cases, select_cases
from .report import (
    device_label,
    environment,
    errors,
    format_text_table,
    goal_rows,
    notes,
    per_call_rows,
    table_rows,
    write_outputs,
)
from .runner import RESERVED_S, Progress, Runner, add_derived, device_backends
from .timing import Timer, TimingPolicy, measure_bandwidth

DEFAULT_OUT = os.path.join("build", "bench-results")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value:g}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fastmask-bench",
        description="Time fastmask's backends against its reference and the code it replaces "
                    "(Transformers4Rec's, RecBole's BERT4Rec transform). Progress goes to stderr.",
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
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"output folder (default: {DEFAULT_OUT}; the committed results are in bench/results)")
    parser.add_argument("--repeats", type=_positive_int, default=None, help="most timed runs per measurement")
    parser.add_argument("--slow-seconds", type=float, default=None,
                        help="a first call slower than this is the only sample "
                             "(default 5; 2 on a GPU; 0.5 with --quick)")
    parser.add_argument("--time-budget", type=_seconds, default=None, metavar="SECONDS",
                        help=f"stop timing when the run has taken this long and report what is left as not timed "
                             f"(default: {goals_module.GPU_RUN_BUDGET_S:g} on a GPU, none on the CPU; 0: none)")
    parser.add_argument("--t4rec", choices=("auto", "installed", "none"), default="auto",
                        help="Transformers4Rec baseline: the installed package when it imports (auto), require it "
                             "(installed), or none (compare with the reference only)")
    parser.add_argument("--t4rec-wheel", default=None, metavar="PATH",
                        help="run Transformers4Rec's masking.py and ranking_metric.py from this transformers4rec "
                             "wheel or sdist (pip download --no-deps transformers4rec==23.12.0), installed or not")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    return parser.parse_args(argv)


def _check_out(path: str) -> None:
    try:  # now, not after the timings
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise SystemExit(f"fastmask-bench: cannot create the --out folder {path!r}: {error.strerror}") from None
    if not os.access(path, os.W_OK):
        raise SystemExit(f"fastmask-bench: the --out folder {path!r} is not writable")


def load_baselines(args: argparse.Namespace) -> Baselines:
    try:
        t4rec, t4rec_note = load_t4rec(args.t4rec, args.t4rec_wheel)
    except BaselineError as error:
        raise SystemExit(f"fastmask-bench: {error}") from None
    recbole, recbole_note = load_recbole()
    return Baselines(
        {T4REC: t4rec, RECBOLE: recbole, MATERIALISED: torch},
        {T4REC: t4rec_note, RECBOLE: recbole_note,
         MATERIALISED: "torch's matmul into the (N, V) scores, then the op on them (cases from hidden states)"},
    )


def run(args: argparse.Namespace) -> dict:
    """Run the benchmark described by ``args``; returns the report (also written to ``args.out``)."""
    started = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("fastmask-bench: --device cuda but torch sees no GPU")
    requested = [name.strip() for name in args.backend.split(",") if name.strip()] if args.backend else None
    backends = device_backends(device, requested)
    cases = select_cases(build_cases(device.type, args.quick), args.only)
    if not cases:
        raise SystemExit(f"fastmask-bench: no case matches --only {args.only!r}")
    _check_out(args.out)
    budget_s = args.time_budget
    if budget_s is None and device.type == "cuda" and not args.quick:
        budget_s = goals_module.GPU_RUN_BUDGET_S
    deadline = started + max(budget_s - RESERVED_S, 0.0) if budget_s else None
    progress = Progress(not args.no_progress, started)
    baselines = load_baselines(args)
    for name, note in baselines.notes.items():
        progress(f"{name}: {note}")
    policy = TimingPolicy.default(device.type, args.quick, args.repeats, args.slow_seconds)
    timer = Timer(device, policy)
    runner = Runner(device, backends, baselines, timer, progress, deadline, budget_s)

    progress(f"warm-up: every contender of {len(cases)} cases once at tiny shapes (kernels compile)")
    runner.prime(cases)
    progress("copy and read bandwidth")
    bandwidth = measure_bandwidth(timer, device, args.quick)
    rows = runner.run(cases)
    add_derived(rows, bandwidth)
    t4rec_loaded = baselines.libraries[T4REC] is not None
    report = {
        "schema_version": 2,
        "environment": environment(device, backends, baselines.notes, policy),
        "settings": {"device": args.device, "backend": args.backend, "quick": args.quick, "only": args.only,
                     "repeats": args.repeats, "slow_seconds": policy.slow_s, "time_budget_s": budget_s,
                     "t4rec": args.t4rec, "t4rec_wheel": args.t4rec_wheel},
        "t4rec_loaded": t4rec_loaded,
        "bandwidth": bandwidth,
        "rows": rows,
    }
    report["duration_s"] = time.perf_counter() - started
    report["goals"] = goals_module.evaluate_goals(
        device.type, rows, quick=args.quick, selected=bool(args.only), duration_s=report["duration_s"],
        t4rec_loaded=t4rec_loaded)
    stem = device_label(device) + ("-quick" if args.quick else "")
    report["files"] = write_outputs(report, args.out, stem)
    progress(f"done in {time.perf_counter() - started:.0f} s")
    return report


def main(argv=None) -> int:
    report = run(parse_args(argv))
    env = report["environment"]
    device = env["gpu_name"] or env["cpu_model"]
    print(f"\nfastmask {env['fastmask']} on {device} ({env['torch_threads']} torch threads)")
    for name, note in env["baselines"].items():
        print(f"{name}: {note}")
    bandwidth = report["bandwidth"]
    print(f"copy bandwidth {bandwidth['copy_gbps']:.1f} GB/s, read bandwidth {bandwidth['read_gbps']:.1f} GB/s\n")
    print(format_text_table(*table_rows(report)))
    print()
    print(format_text_table(*per_call_rows(report)))
    print()
    print(format_text_table(*goal_rows(report)))
    for line in notes(report):
        print(f"note: {line}")
    failures = errors(report)
    for line in failures:
        print(f"error: {line}")
    print(f"\nwrote {', '.join(report['files'].values())} in {report['duration_s']:.0f} s")
    return 1 if failures else 0  # the report is written either way; a failed contender fails the run


if __name__ == "__main__":
    sys.exit(main())
