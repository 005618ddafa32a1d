"""The benchmark's Transformers4Rec baseline is Transformers4Rec: the installed package when there is
one, and, run from an archive of its files with stand-ins for Merlin, code that behaves as it does.

Needs transformers4rec (``make install`` puts it in the environment); skipped without it.
"""

import pathlib
import sys
import zipfile

import pytest
import torch

pytest.importorskip("transformers4rec.torch")

import transformers4rec  # noqa: E402

from fastmask.bench import baselines, cases  # noqa: E402

PACKAGE_ROOT = pathlib.Path(transformers4rec.__file__).resolve().parents[1]
METRICS = ["PrecisionAt", "RecallAt", "AvgPrecisionAt", "DCGAt", "NDCGAt", "MeanReciprocalRankAt"]


def test_auto_loads_the_installed_package():
    """No silent fall-back: with transformers4rec installed, the baseline is that package."""
    t4rec, label = baselines.load_t4rec("auto")
    assert label.endswith("(installed)") and "transformers4rec" in label
    for module in (t4rec.masking, t4rec.metrics, t4rec.utils):
        assert module.__name__.startswith("transformers4rec.torch.")
        assert pathlib.Path(module.__file__).resolve().is_relative_to(PACKAGE_ROOT)
    assert t4rec.sampler.__module__ == "transformers4rec.torch.model.prediction_task"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A wheel of the installed package's own files (the files the loader runs, and the rest)."""
    path = tmp_path_factory.mktemp("t4rec") / "transformers4rec-23.12.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for file in (PACKAGE_ROOT / "transformers4rec").rglob("*.py"):
            wheel.write(file, file.relative_to(PACKAGE_ROOT).as_posix())
        wheel.writestr("transformers4rec-23.12.0.dist-info/METADATA", "Version: 23.12.0\n")
    return str(path)


@pytest.fixture(scope="module")
def loaded(archive):
    """(installed, from the archive with every Merlin import answered by a stand-in)."""
    installed, _ = baselines.load_t4rec("installed")
    hidden = {name: sys.modules.get(name) for name in baselines.STAND_INS}
    sys.modules.update(dict.fromkeys(baselines.STAND_INS))  # None: these imports fail
    try:
        from_archive, label = baselines.load_t4rec("auto", archive)
    finally:
        for name, module in hidden.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module
    assert "stand-ins for " + ", ".join(sorted(baselines.STAND_INS)) in label
    assert from_archive.masking is not installed.masking and from_archive.masking.__file__.startswith(archive)
    return installed, from_archive


@pytest.mark.parametrize(
    "klass",
    ["CausalLanguageModeling", "MaskedLanguageModeling", "PermutationLanguageModeling", "ReplacementLanguageModeling"],
)
@pytest.mark.parametrize("training", [True, False])
def test_masking_from_the_archive_equals_the_installed_package(loaded, klass, training):
    installed, from_archive = loaded
    ids = cases.make_item_ids(64, 15, torch.device("cpu"), seed=3)
    results = []
    for t4rec in (installed, from_archive):
        torch.manual_seed(11)  # T4Rec draws from torch's global generator
        module = getattr(t4rec.masking, klass)(hidden_size=8)
        outputs = module.compute_masked_targets(ids, training=training)
        extra = [getattr(module, name, None) for name in ("perm_mask", "target_mapping")]
        results.append([outputs.schema, outputs.targets] + [t for t in extra if isinstance(t, torch.Tensor)])
    for got, want in zip(results[1], results[0], strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)
    assert results[0][0].any()  # something was masked


@pytest.mark.parametrize("onehot", [True, False])
@pytest.mark.parametrize("metric", METRICS)
def test_metrics_from_the_archive_equal_the_installed_package(loaded, metric, onehot):
    installed, from_archive = loaded
    gen = torch.Generator().manual_seed(5)
    scores = torch.randn(40, 300, generator=gen)
    target = (
        torch.randint(0, 300, (40,), generator=gen) if onehot else (torch.rand(40, 300, generator=gen) < 0.02).float()
    )
    values = []
    for t4rec in (installed, from_archive):
        module = getattr(t4rec.metrics, metric)(top_ks=[1, 5, 20], labels_onehot=onehot)
        module.update(scores, target)
        values.append(module.compute())
    assert values[0].dtype == values[1].dtype and torch.equal(values[0], values[1])


def test_sampler_from_the_archive_equals_the_installed_package(loaded):
    installed, from_archive = loaded
    labels = torch.randint(0, 10_000, (64,), generator=torch.Generator().manual_seed(2))
    draws = []
    for t4rec in (installed, from_archive):
        torch.manual_seed(4)
        draws.append(t4rec.sampler(200, 10_000).sample(labels))
    for got, want in zip(draws[1], draws[0], strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)
