"""The benchmark package: a --quick run of the command line writes a complete report; the baselines
load from where they are said to (never silently from elsewhere); the time budget, the skips, the
goals and the timing rules do what the report says."""

import contextlib
import importlib.util
import io
import json
import os
import sys
import tarfile
import textwrap
import time
import types
import zipfile

import numpy as np
import pytest
import torch

import fastmask
from fastmask import ops
from fastmask.bench import baselines, cases, cli, goals, report, runner, timing
from fastmask.bench.cases import BACK_TO_BACK, MATERIALISED, RECBOLE, T4REC

CPU = torch.device("cpu")
# Each quick CPU case and its baseline (None: the case has none).
QUICK_CASES = {
    **dict.fromkeys(cases.MASKING_CALLS, T4REC),
    "plm_train_small": T4REC,
    "mlm_train_small": T4REC,
    "plm_train_large": T4REC,
    "plm_eval_large": T4REC,
    "mlm_train_large": T4REC,
    "gumbel_fp32": T4REC,
    "metrics_onehot": T4REC,
    "metrics_multihot": T4REC,
    "ranks_onehot": T4REC,
    "bert4rec_l200": RECBOLE,
    "bert4rec_l50": RECBOLE,
    "merlin_random": None,
    "sampler": T4REC,
    "sampler_fixed": T4REC,
    "ranks_hidden": MATERIALISED,
    "topk_hidden": MATERIALISED,
    "ranks_hidden_large": None,
    "topk_hidden_large": None,
}
FLOOR_CASES = {"plm_train_small", "plm_train_large", "plm_eval_large"}
ROW_FIELDS = {
    "case",
    "op",
    "shape",
    "shape_str",
    "dtype",
    "backend",
    "kind",
    "timing",
    "baseline",
    "median_s",
    "runs",
    "samples_s",
    "calls_per_sample",
    "ratio_vs_reference",
    "ratio_vs_baseline",
    "ratio_vs_t4rec",
    "gbps",
    "floor_s",
    "time_over_floor",
    "pct_copy_bw",
    "peak_mem_bytes",
    "peak_mem_delta_bytes",
    "fallback",
}

# -- a stand-in transformers4rec archive: fastmask's own modules under T4Rec's file names, with the
# imports of Merlin packages that T4Rec's files make, so that the loader's stand-ins are exercised.
FAKE_T4REC = {
    "transformers4rec/torch/masking.py": """
        from fastmask.masking import *  # noqa: F401,F403
        from fastmask.masking import MaskedLanguageModeling as _MLM
        from merlin.models.utils.doc_utils import docstring_parameter
        from merlin.models.utils.registry import Registry

        from .utils.torch_utils import OutputSizeMixin  # noqa: F401

        masking_registry = Registry("torch.masking")
        LOADED_FROM_ARCHIVE = True


        @docstring_parameter(extra="unused")
        @masking_registry.register_with_multiple_names("mlm", "masked")
        class MaskedLanguageModeling(_MLM):
            "MLM of the stand-in archive ({extra})."
    """,
    "transformers4rec/torch/ranking_metric.py": """
        from fastmask.ranking_metric import *  # noqa: F401,F403
        from merlin.models.utils.registry import Registry

        from .utils import torch_utils  # noqa: F401

        ranking_metrics_registry = Registry.class_registry("torch.ranking_metrics")
    """,
    "transformers4rec/torch/utils/torch_utils.py": """
        import torch
        from merlin.schema import Schema as CoreSchema  # noqa: F401
        from merlin_standard_lib import Schema  # noqa: F401

        from ...config.schema import SchemaMixin
        from ..typing import TabularData  # noqa: F401


        class OutputSizeMixin(SchemaMixin):
            pass


        def tranform_label_to_onehot(labels, vocab_size):
            return torch.nn.functional.one_hot(labels, vocab_size)


        def extract_topk(ks, scores, labels):
            values, indices = scores.topk(int(max(ks)))
            return values, indices, labels.gather(1, indices)
    """,
    "transformers4rec/torch/typing.py": "TabularData = dict\n",
    "transformers4rec/config/schema.py": "class SchemaMixin:\n    pass\n",
    "transformers4rec/torch/model/prediction_task.py": """
        import torch  # noqa: F401

        from fastmask.sequence import LogUniformSampler as _Sampler

        from ..block.base import Block  # the rest of T4Rec's model stack: never executed  # noqa: F401


        class LogUniformSampler(_Sampler):
            pass
    """,
}


def write_archive(path, files=FAKE_T4REC, root="", version="23.12.0"):
    """A wheel (.whl: zip, files at the top) or an sdist (.tar.gz: files under ``root``)."""
    members = {root + name: textwrap.dedent(text).lstrip() for name, text in files.items()}
    members[root + ("PKG-INFO" if root else f"transformers4rec-{version}.dist-info/METADATA")] = f"Version: {version}\n"
    if str(path).endswith(".whl"):
        with zipfile.ZipFile(path, "w") as archive:
            for name, text in members.items():
                archive.writestr(name, text)
    else:
        with tarfile.open(path, "w:gz") as archive:
            for name, text in members.items():
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return str(path)


@pytest.fixture(scope="module")
def fake_wheel(tmp_path_factory):
    return write_archive(tmp_path_factory.mktemp("wheel") / "transformers4rec-23.12.0-py3-none-any.whl")


def _main(argv):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = cli.main(argv)
    return status, stdout.getvalue()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, fake_wheel):
    """``fastmask-bench --quick`` on CPU against the stand-in archive, in this process."""
    out = tmp_path_factory.mktemp("bench-results")
    status, stdout = _main(
        ["--quick", "--device", "cpu", "--out", str(out), "--t4rec-wheel", fake_wheel, "--no-progress"]
    )
    assert status == 0, stdout
    stem = out / (report.device_label(CPU) + "-quick")
    return stem, stdout, json.loads(stem.with_suffix(".json").read_text())


def test_quick_run_writes_json_markdown_and_png(quick_run):
    stem, stdout, _ = quick_run
    if importlib.util.find_spec("matplotlib") is not None:
        png = stem.with_suffix(".png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    markdown = stem.with_suffix(".md").read_text()
    assert "| op | shape | dtype | backend | time | runs | vs reference | baseline | vs baseline | GB/s |" in markdown
    assert "## Per-call time of the masking modules" in markdown and "## Goals" in markdown
    assert "transformers4rec 23.12.0 (masking.py, ranking_metric.py and their imports run from" in markdown
    assert "Only fastmask's reference was compared" not in markdown
    assert "vs reference" in stdout and str(stem.with_suffix(".json")) in stdout
    bert4rec = [line for line in markdown.splitlines() if line.startswith("| bert4rec_mask |")]
    if "recbole" not in sys.modules:
        assert len(bert4rec) == 2 * 2 and all("| recbole: not loaded |" in line for line in bert4rec)
    merlin = [line for line in markdown.splitlines() if line.startswith("| merlin_mask_random |")]
    assert len(merlin) == 2 and all("| none | - |" in line for line in merlin)


def test_quick_run_json_has_every_case_with_reference_and_baseline(quick_run):
    _, _, data = quick_run
    rows = data["rows"]
    assert {row["case"] for row in rows} == set(QUICK_CASES)
    timed = set(data["environment"]["backends_timed"])
    assert "reference" in timed and data["t4rec_loaded"] is True
    recbole = data["environment"]["baselines"][RECBOLE]
    loaded = {T4REC, MATERIALISED} | ({RECBOLE} if recbole.startswith("recbole") else set())
    for case, baseline in QUICK_CASES.items():
        expected = timed | ({baseline} & loaded) | ({"floor"} if case in FLOOR_CASES else set())
        assert {row["backend"] for row in rows if row["case"] == case} == expected, case
    assert not [row for row in rows if row.get("error") or row.get("skipped") or row.get("fallback")]
    medians = {(row["case"], row["backend"]): row["median_s"] for row in rows}
    for row in rows:
        assert ROW_FIELDS <= row.keys(), row["case"]
        baseline = QUICK_CASES[row["case"]]
        assert row["baseline"] == (baseline if baseline in loaded else None)
        assert row["median_s"] > 0 and row["runs"] == len(row["samples_s"]) >= 1
        assert row["gbps"] > 0 and row["pct_copy_bw"] > 0
        assert row["timing"] == (BACK_TO_BACK if row["case"] in cases.MASKING_CALLS else cases.PER_CALL)
        if row["backend"] == "floor":
            assert row["ratio_vs_baseline"] is None and row["time_over_floor"] is None
            continue
        if row["baseline"] is None:
            assert row["ratio_vs_baseline"] is None
        else:
            assert row["ratio_vs_baseline"] == pytest.approx(medians[row["case"], baseline] / row["median_s"])
        assert row["ratio_vs_t4rec"] == (row["ratio_vs_baseline"] if baseline == T4REC else None)
        assert row["ratio_vs_reference"] == pytest.approx(medians[row["case"], "reference"] / row["median_s"])
        if row["case"] in FLOOR_CASES:
            assert row["time_over_floor"] == pytest.approx(row["median_s"] / medians[row["case"], "floor"])
        else:
            assert row["floor_s"] is None and row["time_over_floor"] is None


def test_quick_run_times_masking_calls_back_to_back(quick_run):
    _, stdout, data = quick_run
    policy = timing.TimingPolicy.default("cpu", quick=True)
    calls = [row for row in data["rows"] if row["case"] in cases.MASKING_CALLS and row["kind"] == "backend"]
    assert {row["case"] for row in calls} == set(cases.MASKING_CALLS)
    assert all(row["shape"] == {"B": 2, "L": 4} for row in calls)
    assert all(1 <= row["calls_per_sample"] <= policy.batch_calls for row in calls)
    # Fewer calls per sample only when batch_calls of them would not fit the budget (C++ calls take ~0.1 ms).
    assert all(row["calls_per_sample"] == policy.batch_calls for row in calls if row["backend"] == "cpp")
    assert "T4Rec per call" in stdout


def test_quick_run_records_environment_bandwidth_memory_and_goals(quick_run):
    _, _, data = quick_run
    env = data["environment"]
    assert env["torch"] == torch.__version__ and env["torch_threads"] == torch.get_num_threads()
    assert env["device"] == "cpu" and env["cpu_model"] and "reference" in env["backends_timed"]
    assert env["baselines"][T4REC].startswith("transformers4rec 23.12.0")
    missing = sorted(name for name in baselines.STAND_INS if not baselines._importable(name))
    assert f"stand-ins for {', '.join(missing) or 'none'})" in env["baselines"][T4REC]
    assert data["bandwidth"]["copy_gbps"] > 0 and data["bandwidth"]["read_gbps"] > 0
    assert all(row["peak_mem_bytes"] is None or row["peak_mem_bytes"] > 0 for row in data["rows"])
    assert {goal["case"] for goal in data["goals"]} == {
        "plm_train_small",
        "plm_train_large",
        "gumbel_fp32",
        "metrics_onehot",
        "ranks_hidden",
        "topk_hidden",
        "ranks_hidden_large",
        "topk_hidden_large",
    }
    assert all(goal["met"] is None and goal["status"] == "n/a (--quick shapes)" for goal in data["goals"])


def test_without_t4rec_the_report_says_only_the_reference_was_compared(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers4rec", None)  # import fails
    status, stdout = _main(
        ["--quick", "--device", "cpu", "--out", str(tmp_path), "--only", "call_plm_train", "--no-progress"]
    )
    assert status == 0
    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert data["t4rec_loaded"] is False and "only fastmask's reference was compared" in stdout
    assert {row["backend"] for row in data["rows"]} == set(data["environment"]["backends_timed"])
    assert all(row["baseline"] is None and row["baseline_missing"] == T4REC for row in data["rows"])
    markdown = next(tmp_path.glob("*.md")).read_text()
    assert "**Only fastmask's reference was compared**" in markdown and "T4Rec are n/a" in markdown
    assert "| call_plm_train |" not in markdown and "t4rec: not loaded" in markdown


def test_without_matplotlib_the_report_is_written_without_plot(quick_run, tmp_path, monkeypatch, capsys):
    _, _, data = quick_run
    find_spec = report.importlib.util.find_spec
    monkeypatch.setattr(
        report.importlib.util, "find_spec", lambda name: None if name == "matplotlib" else find_spec(name)
    )
    paths = report.write_outputs(data, str(tmp_path), "no-plot")
    assert sorted(paths) == ["json", "md"] and sorted(p.name for p in tmp_path.iterdir()) == [
        "no-plot.json",
        "no-plot.md",
    ]
    assert "matplotlib is not installed" in capsys.readouterr().err


def test_results_go_outside_the_committed_folder_by_default():
    assert cli.parse_args(["--device", "cpu"]).out == os.path.join("build", "bench-results")
    assert not cli.DEFAULT_OUT.startswith(os.path.join("bench", "results"))


# -- baselines -----------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["wheel", "sdist"])
def test_t4rec_files_run_from_the_archive_with_stand_ins(tmp_path, layout):
    name = "transformers4rec-23.12.0" + ("-py3-none-any.whl" if layout == "wheel" else ".tar.gz")
    root = "" if layout == "wheel" else "transformers4rec-23.12.0/"
    path = write_archive(tmp_path / name, root=root)
    before = set(sys.modules)
    t4rec, label = baselines.load_t4rec("auto", path)
    assert (
        t4rec.masking.LOADED_FROM_ARCHIVE
        and t4rec.masking.__file__ == f"{path}/{root}transformers4rec/torch/masking.py"
    )
    if not baselines._importable("merlin.models.utils.registry"):  # else Merlin's own registry
        assert t4rec.masking.masking_registry.entries == {
            "mlm": t4rec.masking.MaskedLanguageModeling,
            "masked": t4rec.masking.MaskedLanguageModeling,
        }
    assert t4rec.metrics.torch_utils is t4rec.utils and t4rec.metrics.NDCGAt.__module__ == "fastmask.ranking_metric"
    assert t4rec.sampler.__module__ == baselines.PREDICTION_TASK and t4rec.sampler_note is None
    assert label.startswith("transformers4rec 23.12.0 (") and os.path.basename(path) in label
    # Nothing of the load stays visible: no partial transformers4rec, no stand-in.
    assert not {n for n in set(sys.modules) - before if n.startswith(("transformers4rec", "merlin"))}
    ids = cases.make_item_ids(4, 6, CPU)
    info = t4rec.masking.MaskedLanguageModeling(hidden_size=8).compute_masked_targets(ids, training=True)
    assert info.schema.shape == ids.shape


def test_an_archive_that_does_not_load_fails_loudly(tmp_path):
    """No silent fall-back: a named archive either loads or stops the run."""
    broken = dict(FAKE_T4REC)
    broken["transformers4rec/torch/masking.py"] = "import fastmask_no_such_module\n"
    path = write_archive(tmp_path / "broken.whl", broken)
    with pytest.raises(baselines.BaselineError, match="fastmask_no_such_module"):
        baselines.load_t4rec("auto", path)
    with pytest.raises(SystemExit, match="did not load"):
        cli.main(
            [
                "--quick",
                "--device",
                "cpu",
                "--only",
                "merlin_random",
                "--out",
                str(tmp_path),
                "--no-progress",
                "--t4rec-wheel",
                path,
            ]
        )
    other = write_archive(tmp_path / "other.whl", {"other/torch/masking.py": ""})
    with pytest.raises(baselines.BaselineError, match="not a transformers4rec wheel or sdist"):
        baselines.load_t4rec("auto", other)
    (tmp_path / "text.whl").write_text("not an archive")
    with pytest.raises(baselines.BaselineError, match="neither a wheel"):
        baselines.load_t4rec("auto", str(tmp_path / "text.whl"))
    with pytest.raises(baselines.BaselineError, match="two different baselines"):
        baselines.load_t4rec("installed", write_archive(tmp_path / "good.whl"))


def test_a_sampler_that_does_not_load_is_reported(tmp_path):
    files = dict(FAKE_T4REC)
    files["transformers4rec/torch/model/prediction_task.py"] = "import torch\n"
    t4rec, _ = baselines.load_t4rec("auto", write_archive(tmp_path / "t.whl", files))
    assert t4rec.sampler is None and "defines no LogUniformSampler" in t4rec.sampler_note
    case = next(c for c in cases.build_cases("cpu", quick=True) if c.name == "sampler")
    with pytest.raises(RuntimeError, match="LogUniformSampler was not loaded"):
        case.baseline_fn(t4rec, case.make_inputs(CPU))


def test_installed_transformers4rec_is_used_when_it_imports(tmp_path, monkeypatch):
    site = tmp_path / "site"
    for name, text in {**FAKE_T4REC, "transformers4rec/__init__.py": "__version__ = '0.0.test'\n"}.items():
        target = site / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip())
    for package in (
        "transformers4rec/torch",
        "transformers4rec/torch/utils",
        "transformers4rec/torch/model",
        "transformers4rec/config",
        "transformers4rec/torch/block",
    ):
        (site / package / "__init__.py").parent.mkdir(parents=True, exist_ok=True)
        (site / package / "__init__.py").touch()
    (site / "transformers4rec/torch/block/base.py").write_text("Block = object\n")
    registry = textwrap.dedent("""
        class Registry:
            def __init__(self, name): pass
            @classmethod
            def class_registry(cls, name): return cls(name)
            def register_with_multiple_names(self, *names): return lambda obj: obj
        def docstring_parameter(**kwargs): return lambda obj: obj
        class Schema: pass
    """)
    for module in (
        "merlin/models/utils/registry.py",
        "merlin/models/utils/doc_utils.py",
        "merlin/schema/__init__.py",
        "merlin_standard_lib/__init__.py",
    ):
        (site / module).parent.mkdir(parents=True, exist_ok=True)
        (site / module).write_text(registry)
    monkeypatch.syspath_prepend(str(site))
    for name in [n for n in sys.modules if n.startswith(("transformers4rec", "merlin"))]:
        monkeypatch.delitem(sys.modules, name)
    try:
        t4rec, label = baselines.load_t4rec("auto")
        assert label == "transformers4rec 0.0.test (installed)"
        assert t4rec.masking.__name__ == "transformers4rec.torch.masking" and t4rec.masking.__file__.startswith(
            str(site)
        )
        t4rec, _ = baselines.load_t4rec("installed")
        assert t4rec.sampler.__module__ == "transformers4rec.torch.model.prediction_task"
    finally:  # the stand-in package must not stay importable for the tests after this one
        for name in [n for n in sys.modules if n.startswith(("transformers4rec", "merlin"))]:
            del sys.modules[name]


def test_t4rec_installed_without_transformers4rec_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers4rec", None)  # import fails
    with pytest.raises(baselines.BaselineError, match="--t4rec installed"):
        baselines.load_t4rec("installed")
    with pytest.raises(SystemExit, match="--t4rec installed"):
        cli.main(["--quick", "--device", "cpu", "--t4rec", "installed", "--out", str(tmp_path), "--no-progress"])
    t4rec, note = baselines.load_t4rec("auto")
    assert t4rec is None and "only fastmask's reference was compared" in note
    assert baselines.load_t4rec("none")[0] is None


@pytest.mark.skipif(
    not os.environ.get("FASTMASK_T4REC_WHEEL"), reason="FASTMASK_T4REC_WHEEL names no transformers4rec archive"
)
def test_the_real_transformers4rec_archive_loads():
    path = os.environ["FASTMASK_T4REC_WHEEL"]
    t4rec, label = baselines.load_t4rec("auto", path)
    assert t4rec.sampler is not None, t4rec.sampler_note
    assert t4rec.masking.__file__.startswith(path) and "transformers4rec 23.12.0" in label
    ids = cases.make_item_ids(8, 10, CPU)
    info = t4rec.masking.PermutationLanguageModeling(hidden_size=8).compute_masked_targets(ids, training=True)
    assert info.schema.shape == ids.shape and info.targets.dtype == ids.dtype


class _FakeInteraction(dict):
    def __init__(self, fields):
        super().__init__(fields)


class _FakeMaskItemSequence:
    """Records what RecBole's transform would be given."""

    instances: list = []

    def __init__(self, config):
        self.config = dict(config)
        self.calls = []
        self.instances.append(self)

    def __call__(self, dataset, interaction):
        self.calls.append((dataset.num("item_id"), interaction["item_id_list"]))
        return interaction


def test_bert4rec_cases_use_recbole_when_it_imports(monkeypatch):
    transform = types.ModuleType("recbole.data.transform")
    transform.MaskItemSequence = _FakeMaskItemSequence
    interaction = types.ModuleType("recbole.data.interaction")
    interaction.Interaction = _FakeInteraction
    recbole = types.ModuleType("recbole")
    recbole.__version__ = "0.test"
    for name, module in {
        "recbole": recbole,
        "recbole.data": types.ModuleType("recbole.data"),
        "recbole.data.transform": transform,
        "recbole.data.interaction": interaction,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    library, note = baselines.load_recbole()
    assert note == "recbole 0.test MaskItemSequence (installed)"
    case = next(c for c in cases.build_cases("cpu", quick=True) if c.name == "bert4rec_l200")
    inputs = case.make_inputs(CPU)
    _FakeMaskItemSequence.instances = []
    case.baseline_fn(library, inputs)()
    (transform_object,) = _FakeMaskItemSequence.instances
    assert transform_object.config["MAX_ITEM_LIST_LENGTH"] == case.shape["L"]
    assert transform_object.config["mask_ratio"] == cases.BERT4REC_MASK_RATIO
    assert transform_object.config["ITEM_ID_FIELD"] + transform_object.config["LIST_SUFFIX"] == "item_id_list"
    ((n_items, ids),) = transform_object.calls
    assert n_items == cases.N_ITEMS and ids is inputs["ids"]


def test_without_recbole_the_bert4rec_cases_have_no_baseline(monkeypatch):
    monkeypatch.setitem(sys.modules, "recbole", None)
    library, note = baselines.load_recbole()
    assert library is None and "no baseline" in note
    found = baselines.Baselines({RECBOLE: None, T4REC: None}, {})
    case = next(c for c in cases.build_cases("cpu", quick=True) if c.name == "bert4rec_l50")
    names = [c.name for c in runner.contenders(case, ["reference"], CPU, found, {})]
    assert names == ["reference"]


# -- cases ---------------------------------------------------------------------------------------
def test_default_cases_have_the_goal_shapes():
    cpu = {case.name: case for case in cases.build_cases("cpu")}
    gpu = {case.name: case for case in cases.build_cases("cuda")}
    for name in cases.MASKING_CALLS:
        assert cpu[name].shape == {"B": 2, "L": 4} and gpu[name].shape == {"B": 256, "L": 20}
        assert cpu[name].timing == gpu[name].timing == BACK_TO_BACK
    assert cpu["plm_train_small"].shape == {"B": 256, "L": 20} and "plm_train_small" not in gpu
    for shapes in (cpu, gpu):
        assert shapes["plm_train_large"].shape == shapes["plm_eval_large"].shape == {"B": 512, "L": 200}
        assert shapes["plm_train_large"].timing == cases.PER_CALL
        for name, (batch, length) in (("bert4rec_l200", (256, 200)), ("bert4rec_l50", (2048, 50))):
            expected = {"B": batch, "L": length, "n_items": 50_000, "mask_ratio": 0.2, "ft_ratio": 0.0}
            assert shapes[name].shape == expected
        assert shapes["merlin_random"].shape == {"B": 512, "L": 200}
        for name in ("sampler", "sampler_fixed"):
            assert shapes[name].shape == {"labels": 2048, "max_n_samples": 1000, "max_id": 1_000_000}
    assert cpu["gumbel_fp32"].shape == {"P": 2048, "V": 50_000} and not cpu["gumbel_fp32"].bounds
    assert cpu["metrics_onehot"].shape == {"N": 2048, "V": 50_000, "labels": "one-hot"}
    for name in ("gumbel_fp32", "gumbel_bf16"):
        assert gpu[name].shape == {"P": 4096, "V": 100_000} and gpu[name].bounds
    assert gpu["metrics_onehot"].shape == {"N": 4096, "V": 1_000_000, "labels": "one-hot"}
    assert gpu["ranks_onehot"].shape == {"N": 4096, "V": 1_000_000}
    # PLM train writes two float32 (B, L, L) masks; PLM eval one int64 (B, L, L) perm_mask.
    assert gpu["plm_train_large"].bytes_written == 512 * 200 * (1 + 8) + 2 * 4 * 512 * 200 * 200
    assert gpu["plm_eval_large"].bytes_written == 512 * 200 * (1 + 8) + 8 * 512 * 200 * 200


def test_only_selects_cases_by_glob_or_substring():
    built = cases.build_cases("cpu", quick=True)
    assert {c.name for c in cases.select_cases(built, "plm_*")} == {  # by name, or by op for the call_ cases
        "plm_train_small",
        "plm_train_large",
        "plm_eval_large",
        "call_plm_train",
        "call_plm_eval",
    }
    assert {c.name for c in cases.select_cases(built, "*_large")} == {
        "plm_train_large",
        "plm_eval_large",
        "mlm_train_large",
        "ranks_hidden_large",
        "topk_hidden_large",
    }
    assert {c.name for c in cases.select_cases(built, "*from_hidden")} == {
        "ranks_hidden", "topk_hidden", "ranks_hidden_large", "topk_hidden_large",
    }
    assert {c.name for c in cases.select_cases(built, "call_*")} == set(cases.MASKING_CALLS)
    assert {c.name for c in cases.select_cases(built, "gumbel")} == {"gumbel_fp32"}
    assert {c.name for c in cases.select_cases(built, "bert4rec*")} == {"bert4rec_l200", "bert4rec_l50"}
    assert cases.select_cases(built, "no-such-case") == []


class _RecordingMetric:
    seen: list = []

    def __init__(self, top_ks, labels_onehot):
        pass

    def update(self, preds, target):
        self.seen.append((id(preds), preds.data_ptr(), preds))


@pytest.mark.parametrize("name", ["metrics_onehot", "metrics_multihot"])
def test_metrics_cases_give_every_call_a_new_scores_tensor(name):
    """The metrics share a rank pass keyed by tensor identity and version: re-timing one tensor
    would measure a cache hit."""
    case = next(c for c in cases.build_cases("cpu", quick=True) if c.name == name)
    namespace = types.SimpleNamespace(
        NDCGAt=_RecordingMetric, AvgPrecisionAt=_RecordingMetric, RecallAt=_RecordingMetric
    )
    _RecordingMetric.seen = []
    call = case.baseline_fn(types.SimpleNamespace(metrics=namespace), case.make_inputs(CPU))
    for _ in range(4):
        call()
    seen = _RecordingMetric.seen
    assert len(seen) == 12
    batches = [seen[i : i + 3] for i in range(0, 12, 3)]
    for batch in batches:  # the three metrics of one call see one tensor
        assert len({entry[0] for entry in batch}) == 1
    for before, after in zip(batches, batches[1:], strict=False):  # consecutive calls: other object, other storage
        assert before[0][2] is not after[0][2] and before[0][1] != after[0][1]


# -- time budget, skips, timing ------------------------------------------------------------------
def _case(**changes):
    case = next(c for c in cases.build_cases("cpu", quick=True) if c.name == "plm_train_large")
    for key, value in changes.items():
        setattr(case, key, value)
    return case


def test_reference_is_skipped_on_a_gpu_above_the_size_limit():
    found = baselines.Baselines({}, {})
    big = _case(bytes_read=runner.REFERENCE_MAX_BYTES_GPU, bytes_written=1)
    small = _case(bytes_read=runner.REFERENCE_MAX_BYTES_GPU - 1, bytes_written=1)
    gpu = torch.device("cuda")
    skipped = {c.name: c.skip for c in runner.contenders(big, ["reference", "triton"], gpu, found, {})}
    assert skipped["reference"].startswith("not timed: on a GPU the reference (the oracle) is timed up to 32 MiB")
    assert skipped["triton"] is None and skipped["floor"] is None
    assert all(c.skip is None for c in runner.contenders(small, ["reference", "triton"], gpu, found, {}))
    assert all(c.skip is None for c in runner.contenders(big, ["reference", "cpp"], CPU, found, {}))


def test_the_reference_of_a_large_case_from_hidden_states_is_not_timed():
    found = baselines.Baselines({}, {})
    built = {c.name: c for c in cases.build_cases("cpu")}
    for name in ("ranks_hidden", "topk_hidden_large"):
        skipped = {c.name: c.skip for c in runner.contenders(built[name], ["reference", "cpp"], CPU, found, {})}
        assert skipped["reference"].startswith("not timed: the reference takes minutes beyond 1e+09 multiply-adds")
        assert skipped["cpp"] is None
    quick = {c.name: c for c in cases.build_cases("cpu", quick=True)}
    assert all(c.skip is None for c in runner.contenders(quick["ranks_hidden"], ["reference"], CPU, found, {}))


def test_gumbel_cases_on_a_gpu_time_the_read_and_philox_bounds():
    case = next(c for c in cases.build_cases("cuda") if c.name == "gumbel_bf16")
    found = baselines.Baselines({}, {})
    names = [
        (c.name, c.kind) for c in runner.contenders(case, ["reference", "triton"], torch.device("cuda"), found, {})
    ]
    assert names == [
        ("reference", "backend"),
        ("triton", "backend"),
        ("read bound", "bound"),
        ("philox bound", "bound"),
    ]


def test_a_spent_time_budget_reports_the_contenders_left_as_not_timed(tmp_path):
    status, stdout = _main(
        [
            "--quick",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
            "--only",
            "plm_*",
            "--t4rec",
            "none",
            "--time-budget",
            "0.001",
            "--no-progress",
        ]
    )
    assert status == 0  # not timed is no error
    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert data["settings"]["time_budget_s"] == 0.001
    assert data["rows"] and all(
        row["skipped"].startswith("not timed: the run's time budget (0.001 s) was spent") for row in data["rows"]
    )
    assert "## Notes: not timed, not captured, fallbacks" in next(tmp_path.glob("*.md")).read_text()
    assert "note: plm_train_large / reference" in stdout


def test_the_time_budget_is_shared_by_the_measurements_left():
    run = runner.Runner(
        CPU,
        ["reference"],
        baselines.Baselines({}, {}),
        None,
        runner.Progress(False, 0.0),
        deadline=time.perf_counter() + 10.0,
        budget_s=15.0,
    )
    assert 4.0 < run._share(2) <= 5.0 and run._share(10_000) == 0.02
    assert runner.Runner(CPU, [], baselines.Baselines({}, {}), None, None)._share(3) is None


def test_progress_goes_to_stderr(tmp_path, capsys):
    with contextlib.redirect_stdout(io.StringIO()):
        assert (
            cli.main(
                ["--quick", "--device", "cpu", "--out", str(tmp_path), "--only", "merlin_random", "--t4rec", "none"]
            )
            == 0
        )
    err = capsys.readouterr().err
    assert "fastmask-bench [" in err and "merlin_random / cpp:" in err and "done in" in err


def test_gpu_runs_have_a_default_time_budget():
    assert goals.GPU_RUN_BUDGET_S == 120
    assert cli.parse_args(["--device", "cpu"]).time_budget is None  # the default is chosen per device in run()
    with pytest.raises(SystemExit):
        cli.parse_args(["--time-budget", "-1"])


def test_back_to_back_timing_divides_a_batch_of_calls():
    policy = timing.TimingPolicy(min_runs=2, max_runs=3, budget_s=1.0, slow_s=5.0, batch_calls=20)
    timer = timing.Timer(CPU, policy)
    calls = []
    measured = timer.back_to_back(lambda: calls.append(1))
    assert measured.calls_per_sample == 20 and len(measured.samples_s) == 3 and len(calls) == 1 + 3 * 20
    slow = timer.back_to_back(lambda: time.sleep(0.2))  # 20 calls would not fit twice in 1 s
    assert slow.calls_per_sample == 2 and len(slow.samples_s) == 2
    assert all(0.19 < s < 0.5 for s in slow.samples_s)
    too_slow = timing.Timer(CPU, timing.TimingPolicy(2, 3, 1.0, 0.1, 20)).back_to_back(lambda: time.sleep(0.15))
    assert too_slow.single and len(too_slow.samples_s) == 1


def test_per_call_timing_warms_up_twice_for_compiling_backends():
    timer = timing.Timer(CPU, timing.TimingPolicy(3, 3, 1.0, 5.0, 100))
    calls = []
    measured = timer.per_call(lambda: calls.append(1), compiles=True)
    assert len(calls) == 2 + 3 and measured.calls_per_sample == 1 and len(measured.samples_s) == 3


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc/self/clear_refs")
def test_peak_memory_on_the_cpu_sees_a_temporary_allocation():
    with timing.PeakMemory(CPU) as memory:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, written
        del block
    assert memory.result["peak_mem_delta_bytes"] >= 48 * 2**20
    with timing.PeakMemory(CPU) as quiet:
        pass
    assert quiet.result["peak_mem_delta_bytes"] < 16 * 2**20


def test_philox_bound_makes_every_draw_of_the_sampling_layout():
    pytest.importorskip("triton")
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the Triton kernel needs a GPU or the interpreter")
    from fastmask.bench.philox_bound import philox_draws
    from fastmask.reference.philox import STREAM_GUMBEL, philox4x32

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seed = 0x1234_5678_9ABC_DEF
    got = philox_draws(3, 40, torch.tensor([seed], device=device), STREAM_GUMBEL, block=16, splits=(2, 32))
    expected = np.zeros((3, 2), dtype=np.uint32)
    for row in range(3):
        # Split 0: columns 0-31 (counters 0-7); split 1: the whole block of columns 32-47 (counters 8-11).
        for split, counters in enumerate((np.arange(0, 8), np.arange(8, 12))):
            for words in philox4x32(seed, counters, row, STREAM_GUMBEL, 0):
                expected[row, split] ^= np.bitwise_xor.reduce(words)
    assert got.dtype == torch.int32 and torch.equal(got.cpu(), torch.from_numpy(expected.view(np.int32)))


# -- goals ---------------------------------------------------------------------------------------
def _row(case, backend, median, baseline=T4REC, kind=None):
    kind = kind or ("baseline" if backend in (T4REC, RECBOLE) else "floor" if backend == "floor" else "backend")
    return {
        "case": case,
        "backend": backend,
        "kind": kind,
        "baseline": baseline,
        "median_s": median,
        "bytes_read": 0,
        "bytes_written": 10**9,
    }


def _goals(device, rows, **kwargs):
    settings = dict(quick=False, selected=False, duration_s=100.0, t4rec_loaded=True) | kwargs
    return {(g["case"], g["metric"]): g for g in goals.evaluate_goals(device, rows, **settings)}


def test_cpu_goals_are_met_not_met_or_not_measured():
    rows = [
        _row("plm_train_small", T4REC, 1.0),
        _row("plm_train_small", "cpp", 0.005),  # 200x
        _row("gumbel_fp32", T4REC, 1.0),
        _row("gumbel_fp32", "cpp", 0.5),  # 2x
        _row("plm_train_large", "cpp", 3.0),
        _row("plm_train_large", "floor", 1.0),  # 3x the floor
        # A speed-up against another baseline is no speed-up against T4Rec.
        _row("metrics_onehot", RECBOLE, 1.0, RECBOLE),
        _row("metrics_onehot", "cpp", 0.001, RECBOLE),
    ]
    runner.add_derived(rows, {"copy_gbps": 10.0, "read_gbps": 10.0})
    assert rows[-1]["ratio_vs_baseline"] == pytest.approx(1000) and rows[-1]["ratio_vs_t4rec"] is None
    found = _goals("cpu", rows)
    assert found["plm_train_small", "ratio_vs_t4rec"]["met"] is True
    assert found["plm_train_small", "ratio_vs_t4rec"]["value"] == pytest.approx(200)
    assert found["gumbel_fp32", "ratio_vs_t4rec"]["status"] == "NOT met"
    assert found["plm_train_large", "time_over_floor"]["met"] is False
    assert found["metrics_onehot", "ratio_vs_t4rec"]["status"].startswith("n/a")


def test_gpu_goals_of_the_hot_path():
    rows = [_row(name, "triton", 50e-6) for name in cases.MASKING_CALLS]
    rows[1]["median_s"] = 70e-6  # call_plm_train over 60 us
    rows += [
        _row("plm_train_large", T4REC, 0.4),
        _row("plm_train_large", "triton", 0.4e-3),  # 1000x; 2.5 TB/s written
        _row("gumbel_fp32", T4REC, 8.6e-3),
        _row("gumbel_fp32", "triton", 1.0e-3),  # 8.6x
        _row("gumbel_fp32", "read bound", 0.4e-3, kind="bound"),
        _row("gumbel_fp32", "philox bound", 0.6e-3, kind="bound"),
        _row("metrics_onehot", T4REC, 170e-3),
        _row("metrics_onehot", "triton", 10e-3),  # 17x
    ]
    runner.add_derived(rows, {"copy_gbps": 4000.0, "read_gbps": 4000.0})
    found = _goals("cuda", rows, duration_s=118.0)
    assert [found[name, "median_s"]["met"] for name in cases.MASKING_CALLS] == [True, False, True, True, True]
    assert found["plm_train_large", "write_fraction_of_copy"]["value"] == pytest.approx(10**9 / 0.4e-3 / 4e12)
    assert found["plm_train_large", "ratio_vs_t4rec"]["met"] is True
    assert found["gumbel_fp32", "ratio_vs_t4rec"]["met"] is True
    assert found["gumbel_bf16", "ratio_vs_t4rec"]["status"].startswith(
        "n/a (backend triton or case gumbel_bf16 not run"
    )
    assert found["metrics_onehot", "ratio_vs_t4rec"]["status"] == "NOT met"
    rows.append({**_row("plm_eval_large", T4REC, None), "skipped": "not timed: out of memory (...)"})
    rows.append(_row("plm_eval_large", "triton", 1e-3))
    runner.add_derived(rows, {"copy_gbps": 4000.0, "read_gbps": 4000.0})
    assert _goals("cuda", rows)["plm_eval_large", "ratio_vs_t4rec"]["status"] == (
        "n/a (T4Rec not timed: out of memory (...))"
    )
    assert found["run", "duration_s"]["met"] is True and found["run", "duration_s"]["value"] == 118.0
    gumbel = next(r for r in rows if r["case"] == "gumbel_fp32" and r["backend"] == "triton")
    assert gumbel["binding_bound"] == "philox bound" and gumbel["time_over_bound"] == pytest.approx(1.0 / 0.6)
    assert not _goals("cuda", rows, duration_s=130.0)["run", "duration_s"]["met"]
    assert _goals("cuda", rows, selected=True)["run", "duration_s"]["status"] == "n/a (--only ran a subset)"
    without = _goals("cuda", rows, t4rec_loaded=False)
    assert (
        without["gumbel_fp32", "ratio_vs_t4rec"]["status"] == "n/a (no T4Rec baseline: only the reference was compared)"
    )
    assert without["call_mlm_train", "median_s"]["met"] is True  # goals that need no T4Rec still count


def test_goal_texts_name_the_target():
    texts = [goal.text for goal in goals.GOALS]
    assert "triton call_plm_eval: eager per-call latency (100 calls in a row / 100) <= 60 us" in texts
    assert "the whole run: fastmask-bench run time <= 120 s" in texts
    assert "triton plm_eval_large: output write bandwidth / copy bandwidth >= 50%" in texts


# -- command line --------------------------------------------------------------------------------
def test_unavailable_backend_is_rejected():
    with pytest.raises(SystemExit, match="not available here"):
        runner.device_backends(CPU, ["fortran"])


def test_duplicate_backends_are_timed_once():
    assert runner.device_backends(CPU, ["reference", "reference"]) == ["reference"]


@pytest.mark.parametrize("repeats", ["0", "-2"])
def test_repeats_below_one_is_rejected(repeats, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["--repeats", repeats])
    assert exit_info.value.code == 2 and "--repeats" in capsys.readouterr().err


def test_unusable_out_folder_is_rejected_before_timing(tmp_path, monkeypatch):
    """A run can take many minutes: a bad --out fails at once, not after the timings."""
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    monkeypatch.setattr(runner.Runner, "run", lambda *args: pytest.fail("timed before checking --out"))
    argv = ["--quick", "--device", "cpu", "--only", "merlin_random", "--t4rec", "none", "--no-progress"]
    with pytest.raises(SystemExit, match="--out"):
        cli.main(argv + ["--out", str(not_a_folder / "results")])
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False)  # a read-only folder (even for root)
    with pytest.raises(SystemExit, match="not writable"):
        cli.main(argv + ["--out", str(tmp_path)])


def test_a_contender_that_raises_is_reported_and_fails_the_run(monkeypatch, tmp_path):
    def failing_fastmask_fn(inputs):
        def call():
            raise RuntimeError("kernel exploded")

        return call

    build_cases = cases.build_cases

    def only_mlm(device_type, quick=False):
        (case,) = [c for c in build_cases(device_type, quick) if c.name == "mlm_train_small"]
        case.fastmask_fn = failing_fastmask_fn
        return [case]

    monkeypatch.setattr(cli, "build_cases", only_mlm)
    status, stdout = _main(
        ["--quick", "--device", "cpu", "--out", str(tmp_path), "--t4rec", "none", "--no-progress", "--backend", "cpp"]
    )
    assert status == 1
    assert "error: mlm_train_small / cpp: RuntimeError: kernel exploded" in stdout
    (markdown,) = tmp_path.glob("*.md")
    assert "## Errors" in markdown.read_text() and "kernel exploded" in markdown.read_text()


def test_a_baseline_out_of_gpu_memory_is_not_timed_and_a_backend_out_of_memory_is_an_error():
    def out_of_memory():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 32.00 GiB")

    run = runner.Runner(
        CPU,
        ["reference"],
        baselines.Baselines({}, {}),
        timing.Timer(CPU, timing.TimingPolicy.default("cpu", quick=True)),
        runner.Progress(False, 0.0),
    )
    case = _case()
    baseline = runner.Contender(T4REC, "baseline", lambda: out_of_memory)
    backend = runner.Contender("reference", "backend", lambda: out_of_memory, backend="reference")
    assert run._time(case, baseline, None)["skipped"].startswith("not timed: out of memory (OutOfMemoryError: CUDA")
    assert run._time(case, backend, None)["error"].startswith("OutOfMemoryError: CUDA out of memory")


class _FakeGpuTimer:
    """Stands in for the CUDA timer: eager batches of 100 calls, and a graph capture that fails or not."""

    def __init__(self, capture_error=None):
        self.capture_error = capture_error

    def back_to_back(self, fn, compiles, budget_s):
        fn()
        return timing.Measurement([40e-6] * 5, calls_per_sample=100)

    def per_call(self, fn, compiles, budget_s):
        fn()
        return timing.Measurement([1e-3] * 5)

    def graph_replay(self, fn, budget_s):
        if self.capture_error:
            raise RuntimeError(self.capture_error)
        return timing.Measurement([8e-6] * 5, calls_per_sample=100)


class _NoMemory:
    result = {"peak_mem_bytes": 1000, "peak_mem_delta_bytes": 10}

    def __init__(self, device):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


@pytest.mark.parametrize("capture_error", [None, "operation not permitted when stream is capturing"])
def test_gpu_back_to_back_cases_are_also_timed_under_graph_replay(monkeypatch, capture_error):
    monkeypatch.setattr(runner, "PeakMemory", _NoMemory)
    gpu = torch.device("cuda")
    found = baselines.Baselines({}, {})
    call = next(c for c in cases.build_cases("cpu", quick=True) if c.name == "call_mlm_train")
    large = next(c for c in cases.build_cases("cpu", quick=True) if c.name == "mlm_train_large")
    run = runner.Runner(gpu, ["reference", "triton"], found, _FakeGpuTimer(capture_error), runner.Progress(False, 0.0))
    rows = []
    for case in (call, large):
        inputs = case.make_inputs(CPU)
        for contender in runner.contenders(case, ["reference", "triton"], gpu, found, inputs):
            rows.append({**run._row(case, contender), **run._time(case, contender, None)})
    by = {(row["case"], row["backend"]): row for row in rows}
    assert by["call_mlm_train", "triton"]["calls_per_sample"] == 100
    assert "graph_median_s" not in by["call_mlm_train", "reference"]  # the reference is not captured
    assert "graph_median_s" not in by["mlm_train_large", "triton"]  # per-call cases are not captured
    triton = by["call_mlm_train", "triton"]
    if capture_error:
        assert triton["graph_error"] == f"RuntimeError: {capture_error}" and "error" not in triton
    else:
        assert triton["graph_median_s"] == 8e-6 and triton["graph_calls_per_sample"] == 100
    runner.add_derived(rows, {"copy_gbps": 4000.0, "read_gbps": 4000.0})
    data = {"environment": {"device": "cuda"}, "rows": rows}
    header, lines = report.table_rows(data)
    graph = header.index("graph replay")
    shown = {(line[0], line[1], line[3]): line[graph] for line in lines}
    assert shown["mlm_train", "B=2 L=4", "triton"] == ("capture failed" if capture_error else "8 us")
    assert shown["mlm_train", "B=2 L=4", "reference"] == "-"
    assert report.per_call_rows(data)[0] == ["call", "shape", "backend", "per call", "graph replay", "T4Rec per call"]
    assert bool(report.notes(data)) == bool(capture_error)


def test_a_backend_without_a_kernel_for_an_op_is_shown_as_a_fallback(monkeypatch):
    case = next(c for c in cases.build_cases("cpu", quick=True) if c.name == "call_mlm_train")
    call = case.fastmask_fn(case.make_inputs(CPU))
    with fastmask.use_backend("reference"):
        assert runner.fallbacks(call, "reference", "cpu") == []
    op = ops.TABLE["mlm_train"]
    monkeypatch.setattr(op, "kernel", lambda device_type: ("reference", op.reference))
    assert runner.fallbacks(call, "triton", "cpu") == ["mlm_train runs on reference"]
    rows = [_row("call_mlm_train", "triton", 70e-6) | {"fallback": "mlm_train runs on reference"}]
    runner.add_derived(rows, {"copy_gbps": 1.0, "read_gbps": 1.0})
    goal = _goals("cuda", rows)["call_mlm_train", "median_s"]
    assert goal["status"] == "n/a (triton has no kernel for every op of the call: mlm_train runs on reference)"
    data = {"environment": {"device": "cuda"}, "rows": [{**rows[0], "op": "mlm_train", "shape_str": "B=2 L=4",
                                                          "dtype": "int64", "timing": BACK_TO_BACK}]}
    assert report.table_rows(data)[1][0][3] == "triton (fell back)"
    assert report.notes(data) == ["call_mlm_train / triton: no triton kernel, so this row times another backend: "
                                  "mlm_train runs on reference"]
