"""Smoke test of the benchmark command line: a --quick run writes a complete report."""
import contextlib
import io
import json

import pytest
import torch

from fastmask import bench

QUICK_CASES = {
    "plm_train_small", "plm_train_large", "mlm_train_small", "mlm_train_large", "plm_eval_large",
    "gumbel_fp32", "metrics_onehot", "metrics_multihot", "ranks_onehot",
}
FLOOR_CASES = {"plm_train_small", "plm_train_large", "plm_eval_large"}
ROW_FIELDS = {
    "case", "op", "shape", "shape_str", "dtype", "backend", "median_s", "runs", "samples_s",
    "ratio_vs_reference", "ratio_vs_t4rec", "gbps", "floor_s", "time_over_floor", "pct_copy_bw",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``fastmask-bench --quick`` on CPU, in this process (torch is imported once)."""
    out = tmp_path_factory.mktemp("bench-results")
    argv = ["--quick", "--device", "cpu", "--out", str(out), "--t4rec", "baseline", "--no-progress"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert bench.main(argv) == 0
    return out / (bench.device_label(torch.device("cpu")) + "-quick"), stdout.getvalue()


def test_quick_run_writes_json_markdown_and_png(quick_run):
    stem, stdout = quick_run
    png = stem.with_suffix(".png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    markdown = stem.with_suffix(".md").read_text()
    assert "| op | shape | dtype | backend | median | runs | vs reference | vs T4Rec | GB/s |" in markdown
    assert "## Goals" in markdown and "fastmask._t4rec_baseline" in markdown
    assert "vs reference" in stdout and str(stem.with_suffix(".json")) in stdout


def test_quick_run_json_has_every_case_with_reference_and_t4rec(quick_run):
    stem, _ = quick_run
    report = json.loads(stem.with_suffix(".json").read_text())
    rows = report["rows"]
    assert {row["case"] for row in rows} == QUICK_CASES
    for case in QUICK_CASES:
        backends = {row["backend"] for row in rows if row["case"] == case}
        assert {"t4rec", "reference"} <= backends, case
        assert ("floor" in backends) == (case in FLOOR_CASES), case
    assert not [row for row in rows if row.get("error")]
    medians = {(row["case"], row["backend"]): row["median_s"] for row in rows}
    for row in rows:
        assert ROW_FIELDS <= row.keys(), row["case"]
        assert row["median_s"] > 0 and row["runs"] == len(row["samples_s"]) >= 1
        assert row["gbps"] > 0 and row["pct_copy_bw"] > 0
        if row["backend"] == "floor":
            assert row["ratio_vs_t4rec"] is None and row["time_over_floor"] is None
            continue
        assert row["ratio_vs_t4rec"] == pytest.approx(medians[row["case"], "t4rec"] / row["median_s"])
        assert row["ratio_vs_reference"] == pytest.approx(medians[row["case"], "reference"] / row["median_s"])
        if row["case"] in FLOOR_CASES:
            assert row["time_over_floor"] == pytest.approx(row["median_s"] / medians[row["case"], "floor"])
        else:
            assert row["floor_s"] is None and row["time_over_floor"] is None


def test_quick_run_records_environment_bandwidth_and_goals(quick_run):
    stem, _ = quick_run
    report = json.loads(stem.with_suffix(".json").read_text())
    env = report["environment"]
    assert env["torch"] == torch.__version__ and env["torch_threads"] == torch.get_num_threads()
    assert env["device"] == "cpu" and env["cpu_model"] and "reference" in env["backends_timed"]
    assert env["t4rec_algorithm"].startswith("fastmask._t4rec_baseline")
    assert report["bandwidth"]["copy_gbps"] > 0 and report["bandwidth"]["read_gbps"] > 0
    goals = report["goals"]
    assert {goal["case"] for goal in goals} == {"plm_train_small", "plm_train_large", "gumbel_fp32", "metrics_onehot"}
    assert all(goal["met"] is None and goal["status"] == "n/a (--quick shapes)" for goal in goals)


def _row(case, backend, median):
    return {"case": case, "backend": backend, "median_s": median, "bytes_read": 0, "bytes_written": 0}


def test_goals_are_met_not_met_or_not_measured():
    rows = [
        _row("plm_train_small", "t4rec", 1.0), _row("plm_train_small", "cpp", 0.005),  # 200x
        _row("gumbel_fp32", "t4rec", 1.0), _row("gumbel_fp32", "cpp", 0.5),  # 2x
        _row("plm_train_large", "cpp", 3.0), _row("plm_train_large", "floor", 1.0),  # 3x the floor
    ]
    bench.add_derived(rows, {"copy_gbps": 10.0, "read_gbps": 10.0})
    goals = {goal["case"]: goal for goal in bench.evaluate_goals("cpu", rows, quick=False)}
    assert goals["plm_train_small"]["met"] is True and goals["plm_train_small"]["value"] == pytest.approx(200)
    assert goals["gumbel_fp32"]["met"] is False and goals["gumbel_fp32"]["status"] == "NOT met"
    assert goals["plm_train_large"]["met"] is False and goals["plm_train_large"]["value"] == pytest.approx(3)
    assert goals["metrics_onehot"]["met"] is None and goals["metrics_onehot"]["status"].startswith("n/a")


def test_only_selects_cases_by_glob_or_substring():
    cases = bench.build_cases("cpu", quick=True)
    assert {case.name for case in bench.select_cases(cases, "plm_*")} == {
        "plm_train_small", "plm_train_large", "plm_eval_large"}
    assert {case.name for case in bench.select_cases(cases, "gumbel")} == {"gumbel_fp32"}
    assert bench.select_cases(cases, "no-such-case") == []


def test_default_cases_have_the_goal_shapes():
    shapes = {case.name: case.shape for case in bench.build_cases("cpu", quick=False)}
    assert shapes["plm_train_small"] == {"B": 256, "L": 20} and shapes["plm_train_large"] == {"B": 512, "L": 200}
    assert shapes["gumbel_fp32"] == {"P": 2048, "V": 50_000}
    assert shapes["metrics_onehot"] == {"N": 2048, "V": 50_000, "labels": "one-hot"}
    gpu = {case.name: case.shape for case in bench.build_cases("cuda", quick=False)}
    assert gpu["gumbel_bf16"] == {"P": 4096, "V": 100_000} and gpu["ranks_onehot"] == {"N": 4096, "V": 1_000_000}


def test_unknown_backend_is_rejected():
    with pytest.raises(SystemExit, match="unknown backend"):
        bench.device_backends(torch.device("cpu"), ["fortran"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the cuda backend may be available")
def test_unavailable_backend_is_rejected():
    with pytest.raises(SystemExit, match="not available"):
        bench.device_backends(torch.device("cpu"), ["cuda"])
