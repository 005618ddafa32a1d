"""Smoke test of the benchmark command line: a --quick run writes a complete report."""
import contextlib
import io
import json
import sys

import pytest
import torch

from fastmask import bench, ops
from fastmask.reference.philox import bernoulli_threshold

# Each quick case and the baseline it is timed against (None: fastmask's backends and reference only).
QUICK_CASES = {
    "plm_train_small": "t4rec", "plm_train_large": "t4rec", "mlm_train_small": "t4rec", "mlm_train_large": "t4rec",
    "plm_eval_large": "t4rec", "gumbel_fp32": "t4rec", "metrics_onehot": "t4rec", "metrics_multihot": "t4rec",
    "ranks_onehot": "t4rec", "bert4rec_l200": "per-user loop", "bert4rec_l50": "per-user loop",
    "merlin_random": None, "sampler": "t4rec", "sampler_fixed": "t4rec",
}
FLOOR_CASES = {"plm_train_small", "plm_train_large", "plm_eval_large"}
ROW_FIELDS = {
    "case", "op", "shape", "shape_str", "dtype", "backend", "baseline", "median_s", "runs", "samples_s",
    "ratio_vs_reference", "ratio_vs_baseline", "ratio_vs_t4rec", "gbps", "floor_s", "time_over_floor", "pct_copy_bw",
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
    assert ("| op | shape | dtype | backend | median | runs | vs reference | baseline | vs baseline | GB/s |"
            in markdown)
    assert "## Goals" in markdown and "fastmask._t4rec_baseline" in markdown
    assert "vs reference" in stdout and str(stem.with_suffix(".json")) in stdout
    bert4rec_loop = [line for line in markdown.splitlines() if line.startswith("| bert4rec_mask |")]
    assert len(bert4rec_loop) == 2 * 3  # two shapes: the loop, the reference and cpp
    assert all("| per-user loop |" in line for line in bert4rec_loop)
    merlin = [line for line in markdown.splitlines() if line.startswith("| merlin_mask_random |")]
    assert len(merlin) == 2 and all("| none | - |" in line for line in merlin)


def test_without_matplotlib_the_report_is_written_without_plot(quick_run, tmp_path, monkeypatch, capsys):
    stem, _ = quick_run
    report = json.loads(stem.with_suffix(".json").read_text())
    find_spec = bench.importlib.util.find_spec
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: None if name == "matplotlib" else find_spec(name))
    paths = bench.write_outputs(report, str(tmp_path), "no-plot")
    assert sorted(paths) == ["json", "md"] and sorted(p.name for p in tmp_path.iterdir()) == ["no-plot.json", "no-plot.md"]
    assert "matplotlib is not installed" in capsys.readouterr().err


def test_quick_run_json_has_every_case_with_reference_and_baseline(quick_run):
    stem, _ = quick_run
    report = json.loads(stem.with_suffix(".json").read_text())
    rows = report["rows"]
    assert {row["case"] for row in rows} == set(QUICK_CASES)
    timed = set(report["environment"]["backends_timed"])
    assert "reference" in timed
    for case, baseline in QUICK_CASES.items():
        expected = timed | ({baseline} if baseline else set()) | ({"floor"} if case in FLOOR_CASES else set())
        assert {row["backend"] for row in rows if row["case"] == case} == expected, case
    assert not [row for row in rows if row.get("error")]
    medians = {(row["case"], row["backend"]): row["median_s"] for row in rows}
    for row in rows:
        assert ROW_FIELDS <= row.keys(), row["case"]
        baseline = QUICK_CASES[row["case"]]
        assert row["baseline"] == baseline
        assert row["median_s"] > 0 and row["runs"] == len(row["samples_s"]) >= 1
        assert row["gbps"] > 0 and row["pct_copy_bw"] > 0
        if row["backend"] == "floor":
            assert row["ratio_vs_baseline"] is None and row["time_over_floor"] is None
            continue
        if baseline is None:
            assert row["ratio_vs_baseline"] is None
        else:
            assert row["ratio_vs_baseline"] == pytest.approx(medians[row["case"], baseline] / row["median_s"])
        assert row["ratio_vs_t4rec"] == (row["ratio_vs_baseline"] if baseline == "t4rec" else None)
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


def _row(case, backend, median, baseline="t4rec"):
    return {"case": case, "backend": backend, "baseline": baseline, "median_s": median,
            "bytes_read": 0, "bytes_written": 0}


def test_goals_are_met_not_met_or_not_measured():
    rows = [
        _row("plm_train_small", "t4rec", 1.0), _row("plm_train_small", "cpp", 0.005),  # 200x
        _row("gumbel_fp32", "t4rec", 1.0), _row("gumbel_fp32", "cpp", 0.5),  # 2x
        _row("plm_train_large", "cpp", 3.0), _row("plm_train_large", "floor", 1.0),  # 3x the floor
        # A speed-up against another baseline is no speed-up against T4Rec.
        _row("metrics_onehot", "per-user loop", 1.0, "per-user loop"),
        _row("metrics_onehot", "cpp", 0.001, "per-user loop"),
    ]
    bench.add_derived(rows, {"copy_gbps": 10.0, "read_gbps": 10.0})
    assert rows[-1]["ratio_vs_baseline"] == pytest.approx(1000) and rows[-1]["ratio_vs_t4rec"] is None
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
    assert {case.name for case in bench.select_cases(cases, "bert4rec*")} == {"bert4rec_l200", "bert4rec_l50"}
    assert {case.name for case in bench.select_cases(cases, "sampler*")} == {"sampler", "sampler_fixed"}
    assert bench.select_cases(cases, "no-such-case") == []


def test_default_cases_have_the_goal_shapes():
    shapes = {case.name: case.shape for case in bench.build_cases("cpu", quick=False)}
    assert shapes["plm_train_small"] == {"B": 256, "L": 20} and shapes["plm_train_large"] == {"B": 512, "L": 200}
    assert shapes["gumbel_fp32"] == {"P": 2048, "V": 50_000}
    assert shapes["metrics_onehot"] == {"N": 2048, "V": 50_000, "labels": "one-hot"}
    gpu = {case.name: case.shape for case in bench.build_cases("cuda", quick=False)}
    assert gpu["gumbel_bf16"] == {"P": 4096, "V": 100_000} and gpu["ranks_onehot"] == {"N": 4096, "V": 1_000_000}
    for cases in (shapes, gpu):
        assert cases["bert4rec_l200"] == {"B": 256, "L": 200, "n_items": 50_000, "mask_ratio": 0.2, "ft_ratio": 0.0}
        assert cases["bert4rec_l50"] == {"B": 2048, "L": 50, "n_items": 50_000, "mask_ratio": 0.2, "ft_ratio": 0.0}
        assert cases["merlin_random"] == {"B": 512, "L": 200}
        for name in ("sampler", "sampler_fixed"):
            assert cases[name] == {"labels": 2048, "max_n_samples": 1000, "max_id": 1_000_000}


def _quick_case(name):
    return next(case for case in bench.build_cases("cpu", quick=True) if case.name == name)


@pytest.mark.parametrize("name", ["bert4rec_l200", "bert4rec_l50"])
def test_bert4rec_loop_times_what_the_op_computes(name):
    """The per-user loop and fastmask compute the same masking: the loop's tensors are the op's at its seed."""
    case = _quick_case(name)
    inputs = case.make_inputs(torch.device("cpu"))
    ids = inputs["ids"]
    loop = case.baseline_fn(None, inputs)()
    mask_item_length = int(bench.BERT4REC_MASK_RATIO * ids.shape[1])
    seed = torch.tensor([bench.BERT4REC_SEED])
    expected = ops.bert4rec_mask(ids, None, seed, bench.N_ITEMS, bernoulli_threshold(0.2), mask_item_length, 0)
    assert all(torch.equal(a, b) for a, b in zip(loop, expected))
    assert (loop[0] == bench.N_ITEMS).any()  # something was masked
    fast = case.fastmask_fn(inputs)()
    assert [(t.shape, t.dtype) for t in fast] == [(t.shape, t.dtype) for t in loop]


def test_merlin_case_masks_every_row():
    case = _quick_case("merlin_random")
    inputs = case.make_inputs(torch.device("cpu"))
    assert ((inputs["ids"] != 0).sum(1) >= 2).all()  # what Merlin Models accepts
    info = case.fastmask_fn(inputs)()
    assert info.schema.shape == inputs["ids"].shape and (info.schema.sum(1) >= 1).all()
    assert case.baseline_fn is None and case.baseline_name is None


@pytest.mark.parametrize("name", ["sampler", "sampler_fixed"])
def test_sampler_contenders_return_sorted_distinct_negatives(name):
    case = _quick_case(name)
    inputs = case.make_inputs(torch.device("cpu"))
    max_n_samples, max_id = case.shape["max_n_samples"], case.shape["max_id"]
    t4rec = bench.load_t4rec("baseline")
    results = {"fastmask": case.fastmask_fn(inputs)(), "t4rec": case.baseline_fn(t4rec, inputs)()}
    for contender, (negatives, true_probs, sample_probs) in results.items():
        assert negatives.dtype == torch.int64 and 0 < len(negatives) <= max_n_samples, contender
        assert (negatives[1:] > negatives[:-1]).all() and 0 <= negatives.min() and negatives.max() < max_id
        assert true_probs.shape == inputs["labels"].shape and sample_probs.shape == negatives.shape
    if name == "sampler_fixed":
        assert len(results["fastmask"][0]) == max_n_samples


def test_unknown_backend_is_rejected():
    with pytest.raises(SystemExit, match="unknown backend"):
        bench.device_backends(torch.device("cpu"), ["fortran"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the cuda backend may be available")
def test_unavailable_backend_is_rejected():
    with pytest.raises(SystemExit, match="not available"):
        bench.device_backends(torch.device("cpu"), ["cuda"])


def test_duplicate_backends_are_timed_once():
    assert bench.device_backends(torch.device("cpu"), ["reference", "reference"]) == ["reference"]


@pytest.mark.parametrize("repeats", ["0", "-2"])
def test_repeats_below_one_is_rejected(repeats, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(["--repeats", repeats])
    assert exit_info.value.code == 2 and "--repeats" in capsys.readouterr().err


def test_unusable_out_folder_is_rejected_before_timing(tmp_path, monkeypatch):
    """A run can take many minutes: a bad --out fails at once, not after the timings."""
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    monkeypatch.setattr(bench, "run_cases", lambda *args: pytest.fail("timed before checking --out"))
    with pytest.raises(SystemExit, match="--out"):
        bench.main(["--quick", "--device", "cpu", "--only", "merlin_random", "--t4rec", "baseline",
                    "--no-progress", "--out", str(not_a_folder / "results")])
    monkeypatch.setattr(bench.os, "access", lambda path, mode: False)  # a read-only folder (even for root)
    with pytest.raises(SystemExit, match="not writable"):
        bench.main(["--quick", "--device", "cpu", "--only", "merlin_random", "--t4rec", "baseline",
                    "--no-progress", "--out", str(tmp_path)])


def test_t4rec_installed_without_transformers4rec_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers4rec", None)  # import fails
    with pytest.raises(SystemExit, match="--t4rec installed"):
        bench.load_t4rec("installed")


def test_a_contender_that_raises_is_reported_and_fails_the_run(monkeypatch, tmp_path):
    def failing_fastmask_fn(inputs):
        def call():
            raise RuntimeError("kernel exploded")
        return call

    def cases(device_type, quick):
        (case,) = [c for c in build_cases(device_type, quick) if c.name == "mlm_train_small"]
        case.fastmask_fn = failing_fastmask_fn
        return [case]

    build_cases = bench.build_cases
    monkeypatch.setattr(bench, "build_cases", cases)
    argv = ["--quick", "--device", "cpu", "--out", str(tmp_path), "--t4rec", "baseline", "--no-progress",
            "--backend", "cpp"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert bench.main(argv) == 1
    assert "error: mlm_train_small / cpp: RuntimeError: kernel exploded" in stdout.getvalue()
    (markdown,) = tmp_path.glob("*.md")
    assert "## Errors" in markdown.read_text() and "kernel exploded" in markdown.read_text()
