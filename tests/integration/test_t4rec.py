"""fastmask inside a real Transformers4Rec: ``fastmask.patch_transformers4rec()``.

Needs transformers4rec (``make test`` installs it); skipped without it.
"""
import contextlib
import importlib.util
import pathlib
import sys

import pytest
import torch

pytest.importorskip("transformers4rec.torch")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from transformers4rec.torch import masking as t4r_masking  # noqa: E402
from transformers4rec.torch import ranking_metric as t4r_ranking_metric  # noqa: E402
from transformers4rec.torch.model import base as t4r_model  # noqa: E402
from transformers4rec.torch.model import prediction_task as t4r_prediction_task  # noqa: E402
from transformers4rec.torch.utils.torch_utils import MappingTransformerMasking  # noqa: E402

import fastmask  # noqa: E402
from fastmask import masking as fm_masking  # noqa: E402
from fastmask import ranking_metric as fm_ranking_metric  # noqa: E402
from fastmask import ops  # noqa: E402
from fastmask.reference import masking as rules  # noqa: E402
from fastmask.reference import sampling as sampling_rules  # noqa: E402
from fastmask.reference.philox import bernoulli_threshold  # noqa: E402

EXAMPLE_PATH = pathlib.Path(__file__).resolve().parents[2] / "examples" / "t4rec_patch.py"
_spec = importlib.util.spec_from_file_location("t4rec_patch_example", EXAMPLE_PATH)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)

NUM_ITEMS, LENGTH = 30, 10
LENGTHS = [10, 7, 4, 2, 3, 1, 9, 5]
MASKINGS = ["clm", "mlm", "plm", "rtd"]
TRAINING_OPS = {"clm": set(), "mlm": {"mlm_train"}, "plm": {"plm_train"}, "rtd": {"mlm_train"}}
EVALUATION_OPS = {"clm": set(), "mlm": {"last_item_targets"}, "plm": {"plm_eval"}, "rtd": {"last_item_targets"}}
METRIC_NAMES = ["precision_at", "recall_at", "avg_precision_at", "dcg_at", "ndcg_at", "mrr_at"]


@pytest.fixture(autouse=True)
def unpatched_afterwards():
    yield
    fastmask.unpatch_transformers4rec()


@pytest.fixture
def op_calls(monkeypatch):
    """Names of the fastmask ops run during the test, in call order."""
    calls = []
    run = ops.Op._dispatched

    def recording_run(op, *args):
        calls.append(op.name)
        return run(op, *args)

    monkeypatch.setattr(ops.Op, "_dispatched", recording_run)
    return calls


def patched(enabled: bool):
    return fastmask.patched_transformers4rec() if enabled else contextlib.nullcontext()


def class_namespaces():
    """Every class defined in Transformers4Rec's masking and metrics modules -> copy of its namespace."""
    return {
        cls: dict(vars(cls))
        for module in (t4r_masking, t4r_ranking_metric, t4r_prediction_task, t4r_model)
        for cls in vars(module).values()
        if isinstance(cls, type) and cls.__module__ == module.__name__
    }


def assert_same_namespaces(actual, expected):
    assert actual.keys() == expected.keys()
    for cls, namespace in expected.items():
        assert actual[cls].keys() == namespace.keys(), cls
        changed = [name for name, value in namespace.items() if actual[cls][name] is not value]
        assert not changed, (cls, changed)


def item_ids(lengths, length=LENGTH, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, NUM_ITEMS + 1, (len(lengths), length), generator=generator)
    ids[torch.arange(length)[None, :] >= torch.tensor(lengths)[:, None]] = 0
    return ids


def masking_module(model):
    (module,) = {id(m): m for m in model.modules() if isinstance(m, t4r_masking.MaskSequence)}.values()
    return module


def train_step(model, batch):
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(batch, training=True)["loss"]
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    return loss


def evaluate(model, batch):
    model.eval()
    with torch.no_grad():
        return model.evaluate([(batch, None)], verbose=False)


# -- patching itself ------------------------------------------------------------------------------


def test_patch_is_idempotent_and_unpatch_restores_every_class_exactly():
    original = class_namespaces()
    fastmask.patch_transformers4rec()
    assert fastmask.is_transformers4rec_patched()
    once = class_namespaces()
    assert (
        t4r_masking.MaskedLanguageModeling._compute_masked_targets
        is fm_masking.MaskedLanguageModeling._compute_masked_targets
    )
    fastmask.patch_transformers4rec()
    assert_same_namespaces(class_namespaces(), once)
    fastmask.unpatch_transformers4rec()
    assert not fastmask.is_transformers4rec_patched()
    assert_same_namespaces(class_namespaces(), original)
    fastmask.unpatch_transformers4rec()
    assert_same_namespaces(class_namespaces(), original)


def test_context_manager_patches_for_the_block_only():
    original = t4r_masking.PermutationLanguageModeling._compute_masked_targets_extended
    with fastmask.patched_transformers4rec():
        assert t4r_masking.PermutationLanguageModeling._compute_masked_targets_extended is not original
    assert t4r_masking.PermutationLanguageModeling._compute_masked_targets_extended is original

    with pytest.raises(KeyError):
        with fastmask.patched_transformers4rec():
            raise KeyError("inside the block")
    assert not fastmask.is_transformers4rec_patched()

    fastmask.patch_transformers4rec()
    with fastmask.patched_transformers4rec():
        pass
    assert fastmask.is_transformers4rec_patched()


def test_patching_without_transformers4rec_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers4rec.torch", None)
    with pytest.raises(ImportError, match="transformers4rec"):
        fastmask.patch_transformers4rec()
    assert not fastmask.is_transformers4rec_patched()


def test_an_incompatible_transformers4rec_is_left_untouched(monkeypatch):
    original = class_namespaces()
    monkeypatch.delattr(t4r_ranking_metric, "MeanReciprocalRankAt")
    with pytest.raises(RuntimeError, match="MeanReciprocalRankAt"):
        fastmask.patch_transformers4rec()
    assert not fastmask.is_transformers4rec_patched()
    monkeypatch.undo()
    assert_same_namespaces(class_namespaces(), original)


def test_classes_registries_and_names_stay_transformers4rec_own():
    masking_classes = dict(t4r_masking.masking_registry._registry)
    metric_classes = dict(t4r_ranking_metric.ranking_metrics_registry._registry)
    with fastmask.patched_transformers4rec():
        assert t4r_masking.masking_registry._registry == masking_classes
        assert t4r_ranking_metric.ranking_metrics_registry._registry == metric_classes
        for name in MASKINGS:
            module = t4r_masking.masking_registry.parse(name)(hidden_size=8)
            assert type(module).__module__ == "transformers4rec.torch.masking"
            assert module.__class__ in MappingTransformerMasking.DEFAULT_MASKING
            assert module.__class__ in MappingTransformerMasking.XLNetConfig
        assert isinstance(t4r_masking.masking_registry["rtd"](hidden_size=8), t4r_masking.MaskedLanguageModeling)
        ndcg = t4r_ranking_metric.ranking_metrics_registry["ndcg"]
        assert type(ndcg) is t4r_ranking_metric.NDCGAt and ndcg.top_ks == [2, 5]


# -- a model, end to end ----------------------------------------------------------------------------


@pytest.mark.parametrize("masking", MASKINGS)
@pytest.mark.parametrize("use_fastmask", [False, True], ids=["t4rec", "fastmask"])
def test_train_step_and_evaluation(masking, use_fastmask, op_calls):
    torch.manual_seed(0)
    schema = example.tiny_schema(NUM_ITEMS, LENGTH)
    batch = example.synthetic_batch(NUM_ITEMS, LENGTHS, LENGTH)
    with patched(use_fastmask):
        model = example.build_model(schema, masking, LENGTH)
        loss = train_step(model, batch)
        training_ops = set(op_calls)
        op_calls.clear()
        metrics = evaluate(model, batch)
        evaluation_ops = set(op_calls)

    assert torch.isfinite(loss)
    expected_names = {f"next-item/{name}_{k}" for name in ("ndcg_at", "avg_precision_at", "recall_at")
                      for k in (10, 20)}
    assert set(metrics) == expected_names
    assert all(0.0 <= float(value) <= 1.0 for value in metrics.values())
    if use_fastmask:
        assert training_ops == TRAINING_OPS[masking]
        assert evaluation_ops == EVALUATION_OPS[masking] | {"target_ranks_from_hidden"}
    else:
        assert training_ops == evaluation_ops == set()


@pytest.mark.parametrize("masking", ["mlm", "plm", "rtd"])
def test_model_training_masks_come_from_torch_seed(masking):
    """The patched model's masks are fastmask's, seeded from torch's generator."""
    batch = example.synthetic_batch(NUM_ITEMS, LENGTHS, LENGTH)
    ids = batch[example.ITEM_COLUMN]
    with fastmask.patched_transformers4rec():
        model = example.build_model(example.tiny_schema(NUM_ITEMS, LENGTH), masking, LENGTH)
        module = masking_module(model)
        model.train()
        runs = []
        for seed in (7, 7, 8):
            torch.manual_seed(seed)
            model(batch, training=True)
            runs.append((module.mask_schema, module.masked_targets, getattr(module, "perm_mask", None)))

    fastmask_module = fm_masking.masking_registry[masking](hidden_size=8)
    torch.manual_seed(7)
    expected = fastmask_module.compute_masked_targets(ids, training=True)
    assert torch.equal(runs[0][0], expected.schema) and torch.equal(runs[0][1], expected.targets)
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1], strict=True) if a is not None)
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], runs[2], strict=True) if a is not None)


def check_training_targets(ids, schema, targets, rows_never_all, padding_idx=0):
    """``rows_never_all``: the rows where the rules guarantee that some item is not a target."""
    nonpad = ids != padding_idx
    count, masked = nonpad.sum(1), schema.sum(1)
    assert schema.dtype == torch.bool and targets.dtype == ids.dtype
    assert torch.equal(schema, targets != padding_idx)
    assert torch.equal(targets[schema], ids[schema])
    assert not (schema & ~nonpad).any(), "a target on padding"
    assert ((masked >= 1) | (count <= 1)).all(), "a row with two or more items and no target"
    assert (masked < count)[rows_never_all].all(), "every item of a row is a target"


def check_perm_mask(schema, perm_mask, target_mapping):
    """XLNet's perm_mask[b, q, k] = 1: query q cannot see key k."""
    batch, length = schema.shape
    assert perm_mask.dtype == torch.float32 and perm_mask.shape == (batch, length, length)
    assert target_mapping.dtype == torch.float32
    assert torch.equal(target_mapping, torch.eye(length).expand(batch, length, length))
    hidden = perm_mask.bool()
    assert not hidden[~schema[:, None, :].expand_as(hidden)].any(), "a non-target key is hidden"
    unmasked_query_masked_key = (~schema)[:, :, None] & schema[:, None, :]
    assert hidden[unmasked_query_masked_key].all(), "a target is visible to a non-target"
    for b in range(batch):
        targets = schema[b].nonzero().flatten()
        sees = ~hidden[b][targets][:, targets]  # among targets: q sees k
        assert not sees.diagonal().any(), "a target sees itself"
        # A factorisation order: each target sees exactly the targets before it.
        seen_counts = sorted(sees.sum(1).tolist())
        assert seen_counts == list(range(len(targets)))
        assert not (sees & sees.T).any()


@pytest.mark.parametrize("masking", ["mlm", "rtd", "plm"])
def test_patched_training_masks_follow_transformers4rec_rules(masking, op_calls):
    lengths = [LENGTH, 1, 2, 3, 5, 8, 9, 4, 6, 7]
    with fastmask.patched_transformers4rec():
        module = t4r_masking.masking_registry[masking](hidden_size=8)
        for seed in range(12):
            ids = item_ids(lengths, seed=seed)
            torch.manual_seed(seed)
            seed_tensor = fm_masking.draw_seed(ids.device)
            torch.manual_seed(seed)
            info = module.compute_masked_targets(ids, training=True)
            # T4Rec's PLM counts targets before dropping span positions that ran into padding, so
            # only its rows without padding are sure to keep an item that is not a target.
            count = (ids != 0).sum(1)
            rows_never_all = count == LENGTH if masking == "plm" else count > 0
            check_training_targets(ids, info.schema, info.targets, rows_never_all)
            assert torch.equal(module.mask_schema, info.schema)
            assert torch.equal(module.masked_targets, info.targets)
            if masking == "plm":
                check_perm_mask(info.schema, module.perm_mask, module.target_mapping)
                expected = rules.plm_train(
                    ids, seed_tensor, 0, module.max_span_length,
                    rules.plm_context_lengths(module.plm_probability, module.max_span_length), False,
                )
                assert torch.equal(info.schema, expected[0]) and torch.equal(info.targets, expected[1])
                assert torch.equal(module.perm_mask, expected[2])
            else:
                expected = rules.mlm_train(ids, seed_tensor, 0, bernoulli_threshold(module.mlm_probability))
                assert torch.equal(info.schema, expected[0]) and torch.equal(info.targets, expected[1])
    assert set(op_calls) == {"plm_train" if masking == "plm" else "mlm_train"}


@pytest.mark.parametrize("masking", ["mlm", "plm"])
def test_rows_of_padding_in_training(masking):
    ids = item_ids([4, 0, 6])
    module = t4r_masking.masking_registry[masking](hidden_size=8)
    with pytest.raises(RuntimeError):  # Transformers4Rec: multinomial over an all-zero row
        module.compute_masked_targets(ids, training=True)
    with fastmask.patched_transformers4rec():
        with pytest.raises(ValueError, match="padding"):
            module.compute_masked_targets(ids, training=True)
        module.skip_empty_rows = True
        info = module.compute_masked_targets(ids, training=True)
    assert not info.schema[1].any() and info.schema[0].any() and info.schema[2].any()


@pytest.mark.parametrize("masking", MASKINGS)
@pytest.mark.parametrize("eval_on_last_item_seq_only", [True, False])
@pytest.mark.parametrize("testing", [True, False], ids=["evaluation", "inference"])
def test_patched_evaluation_and_inference_equal_transformers4rec(masking, eval_on_last_item_seq_only, testing):
    ids = item_ids([LENGTH, 1, 2, 6, 0, 9])
    module = t4r_masking.masking_registry[masking](hidden_size=8, eval_on_last_item_seq_only=eval_on_last_item_seq_only)

    def outputs():
        info = module.compute_masked_targets(ids, training=False, testing=testing)
        return [info.schema, info.targets] + [getattr(module, name, None) for name in ("perm_mask", "target_mapping")]

    expected = outputs()
    with fastmask.patched_transformers4rec():
        actual = outputs()
    for a, e in zip(actual, expected, strict=True):
        if e is None:
            assert a is None
        else:
            assert a.dtype == e.dtype and a.device == e.device and torch.equal(a, e)


# -- RTD sampling ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample_from_batch", [False, True])
def test_patched_rtd_replacements(sample_from_batch, op_calls):
    ids = item_ids(LENGTHS)
    with fastmask.patched_transformers4rec():
        module = t4r_masking.masking_registry["rtd"](hidden_size=8, sample_from_batch=sample_from_batch)
        torch.manual_seed(0)
        info = module.compute_masked_targets(ids, training=True)
        targets_flat = info.targets.flatten()
        num_targets = int(info.schema.sum())
        logits = torch.randn(num_targets, num_targets if sample_from_batch else NUM_ITEMS + 1)
        torch.manual_seed(5)
        corrupted, discriminator_labels, batch_updates = module.get_fake_tokens(ids, targets_flat, logits)
    assert op_calls == ["mlm_train", "gumbel_argmax"]

    torch.manual_seed(5)
    samples = sampling_rules.gumbel_argmax(logits, fm_masking.draw_seed(logits.device))
    if sample_from_batch:
        assert torch.equal(batch_updates, samples)
        samples = info.targets[info.schema][samples]
    else:
        assert batch_updates == []
    assert corrupted.shape == ids.shape and corrupted.dtype == ids.dtype
    assert torch.equal(corrupted[info.schema], samples)
    assert torch.equal(corrupted[~info.schema], ids[~info.schema])
    assert discriminator_labels.dtype == torch.bool
    assert torch.equal(discriminator_labels, info.schema & (corrupted != ids))


def test_patched_sample_from_softmax_matches_the_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]]).expand(20000, 4).contiguous()
    with fastmask.patched_transformers4rec():
        module = t4r_masking.ReplacementLanguageModeling(hidden_size=8)
        torch.manual_seed(0)
        samples = module.sample_from_softmax(logits)
    assert samples.dtype == torch.int64 and samples.shape == (20000,)
    frequencies = torch.bincount(samples, minlength=4).double() / len(samples)
    # 20000 draws: each frequency within 5 standard deviations (< 0.018) of its probability.
    assert torch.allclose(frequencies, torch.softmax(logits[0].double(), 0), atol=0.018)


# -- ranking metrics ---------------------------------------------------------------------------------


def metric_inputs(labels_onehot: bool):
    generator = torch.Generator().manual_seed(1)
    rows, num_items = 24, 40
    scores = torch.randn(rows, num_items, generator=generator)
    if labels_onehot:
        return scores, torch.randint(0, num_items, (rows,), generator=generator)
    labels = (torch.rand(rows, num_items, generator=generator) < 0.08).float()
    labels[3] = 0  # a row with nothing relevant
    labels[5, :] = 1  # a row where everything is
    labels[7] *= 2  # graded relevance
    return scores, labels


def assert_metric_runs_equal(run, op_calls, ranks_with_op=True):
    """``run()`` (a list of metric results) gives the same bits patched and unpatched."""
    expected = run()
    assert op_calls == []
    with fastmask.patched_transformers4rec():
        actual = run()
    assert op_calls == (["target_ranks"] * len(op_calls) if ranks_with_op else [])
    assert op_calls or not ranks_with_op
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert a.dtype == e.dtype and a.shape == e.shape
        assert torch.equal(a, e), (a, e)


@pytest.mark.parametrize("name", METRIC_NAMES)
@pytest.mark.parametrize("labels_onehot", [True, False], ids=["item_ids", "dense_labels"])
def test_patched_metrics_equal_transformers4rec(name, labels_onehot, op_calls):
    scores, targets = metric_inputs(labels_onehot)

    def run():
        metric = t4r_ranking_metric.ranking_metrics_registry[name]
        metric.top_ks, metric.labels_onehot = [1, 3, 10, 40], labels_onehot  # set after construction
        first = metric(scores[:16], targets[:16])
        second = metric(scores[16:], targets[16:])
        return [first, second, metric.compute()]

    assert_metric_runs_equal(run, op_calls)


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_metrics_built_before_patching_or_used_after_unpatching(name, op_calls, monkeypatch):
    """Metrics bind methods when built; each runs fastmask's exactly while patched."""
    scores, targets = metric_inputs(labels_onehot=True)
    onehot_calls = []
    onehot = t4r_ranking_metric.torch_utils.tranform_label_to_onehot
    monkeypatch.setattr(
        t4r_ranking_metric.torch_utils, "tranform_label_to_onehot",
        lambda *args: onehot_calls.append(1) or onehot(*args),
    )

    def build():
        metric = t4r_ranking_metric.ranking_metrics_registry[name]
        metric.top_ks, metric.labels_onehot = [1, 3, 10], True
        return metric

    expected = build()(scores, targets)
    built_before = build()
    onehot_calls.clear()
    with fastmask.patched_transformers4rec():
        built_while = build()
        assert torch.equal(built_while(scores, targets), expected)
        assert onehot_calls == [], "fastmask's update ranks item ids without a one-hot tensor"
        assert op_calls == ["target_ranks"]
        op_calls.clear()
        assert torch.equal(built_before(scores, targets), expected)  # Transformers4Rec's update, fastmask's _metric
        assert op_calls and set(op_calls) == {"target_ranks"}

    op_calls.clear()
    for metric in (built_before, built_while):
        metric.reset()
        assert torch.equal(metric(scores, targets), expected)
    assert op_calls == []


def test_patched_metric_subclasses_run_their_own_metric():
    """A metric defined by its ``_metric``, as Transformers4Rec's docs say, runs it while patched."""

    class HitRateAt(t4r_ranking_metric.RankingMetric):
        def _metric(self, ks, scores, labels):
            _, _, topk = t4r_ranking_metric.torch_utils.extract_topk(ks, scores, labels)
            return torch.stack([topk[:, :k].sum(1).clamp(max=1) for k in ks], 1)

    class DoubledRecallAt(t4r_ranking_metric.RecallAt):
        def _metric(self, ks, scores, labels):
            return 2 * super()._metric(ks, scores, labels)

    for labels_onehot in (True, False):
        scores, targets = metric_inputs(labels_onehot)
        for cls in (HitRateAt, DoubledRecallAt):
            expected = cls([1, 3, 10], labels_onehot)(scores, targets)
            assert expected.sum() > 0
            with fastmask.patched_transformers4rec():
                assert torch.equal(cls([1, 3, 10], labels_onehot)(scores, targets), expected)


# Transformers4Rec's own tie cases (tests/unit/torch/test_ranking_metrics.py): equal scores rank
# lower item ids first. On ties in general torch.topk's order is unspecified, so the reference's
# values are not defined there; fastmask always ranks ties by item id.
TIED_SCORES = torch.tensor([[1, 2, 3, 4, 5, 4, 3, 2, 1]] * 3)
TIED_TARGETS = torch.tensor([7, 5, 4])


@pytest.mark.parametrize("name", METRIC_NAMES)
@pytest.mark.parametrize("labels_onehot", [True, False], ids=["item_ids", "dense_labels"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.float32])
def test_patched_metrics_equal_transformers4rec_on_its_tie_cases(name, labels_onehot, dtype, op_calls):
    scores = TIED_SCORES.to(dtype)
    targets = TIED_TARGETS if labels_onehot else torch.nn.functional.one_hot(TIED_TARGETS, 9)
    batched = (scores.repeat(2, 1, 1), targets.repeat(2, 1) if labels_onehot else targets.repeat(2, 1, 1))

    def run():
        metric = t4r_ranking_metric.ranking_metrics_registry[name]
        metric.top_ks, metric.labels_onehot = [1, 2, 3, 4], labels_onehot
        return [metric(scores, targets), metric(*batched), metric.compute()]

    # fastmask ranks integer scores with a stable sort instead of the target_ranks op.
    assert_metric_runs_equal(run, op_calls, ranks_with_op=dtype.is_floating_point)


def test_model_metrics_equal_transformers4rec_on_the_same_predictions():
    torch.manual_seed(0)
    batch = example.synthetic_batch(NUM_ITEMS, LENGTHS, LENGTH)
    model = example.build_model(example.tiny_schema(NUM_ITEMS, LENGTH), "mlm", LENGTH)
    model.eval()
    with torch.no_grad():
        output = model(batch, testing=True)

    def metrics():
        model.reset_metrics()
        model.calculate_metrics(output["predictions"], targets=output["labels"])
        return model.compute_metrics()

    expected = metrics()
    with fastmask.patched_transformers4rec():
        actual = metrics()
    assert actual.keys() == expected.keys() and len(actual) == 6
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


@pytest.mark.parametrize("built_while_patched", [False, True])
def test_model_metrics_share_one_rank_pass(op_calls, built_while_patched):
    # The model's metrics are the next-item task's defaults, built when transformers4rec was imported.
    defaults = [(metric, metric.update) for metric in t4r_prediction_task.NextItemPredictionTask.DEFAULT_METRICS]
    torch.manual_seed(0)
    batch = example.synthetic_batch(NUM_ITEMS, LENGTHS, LENGTH)
    with patched(built_while_patched):
        model = example.build_model(example.tiny_schema(NUM_ITEMS, LENGTH), "mlm", LENGTH)
    model.eval()
    with torch.no_grad():
        output = model(batch, testing=True)
    model.reset_metrics()
    expected = None if built_while_patched else model.calculate_metrics(output["predictions"], output["labels"])
    with fastmask.patched_transformers4rec():
        model.reset_metrics()
        op_calls.clear()
        actual = model.calculate_metrics(output["predictions"], output["labels"])
    assert op_calls == ["target_ranks"]  # three metrics, one pass over the scores, no one-hot labels
    assert all(metric.update is update for metric, update in defaults)  # restored by the unpatch
    if expected is not None:
        assert actual.keys() == expected.keys() and len(actual) == 3
        assert all(torch.equal(actual[key], expected[key]) for key in expected)


# -- next-item scores from hidden states ---------------------------------------------------------------


class _Products(TorchDispatchMode):
    """The shapes of every matrix product run, and the fastmask ops (dispatch modes see them as
    ``torch.ops.fastmask.*``, not through ``op_calls``)."""

    def __init__(self):
        super().__init__()
        self.shapes, self.fastmask_ops = [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.namespace == "fastmask":
            self.fastmask_ops.append(func.overloadpacket.__name__)
        elif func.overloadpacket.__name__ in ("mm", "addmm", "bmm", "matmul"):
            self.shapes.append(tuple(out.shape))
        return out


def _output_layer(model):
    (task,) = model.prediction_tasks
    return task.pre.module


@pytest.mark.parametrize("masking", ["clm", "mlm", "plm"])
@pytest.mark.parametrize("weight_tying", [True, False], ids=["tied", "untied"])
def test_evaluate_ranks_from_hidden_states_without_the_logits(masking, weight_tying):
    """Model.evaluate returns metrics only: while patched, its next-item metrics come from the hidden
    states and the output layer, equal to Transformers4Rec's on (untied) real-valued scores."""
    torch.manual_seed(0)
    batch = example.synthetic_batch(NUM_ITEMS, LENGTHS, LENGTH)
    model = example.build_model(example.tiny_schema(NUM_ITEMS, LENGTH), masking, LENGTH, weight_tying=weight_tying)
    expected = evaluate(model, batch)
    with fastmask.patched_transformers4rec(), _Products() as products:
        actual = evaluate(model, batch)
    assert set(products.fastmask_ops) == EVALUATION_OPS[masking] | {"target_ranks_from_hidden"}
    logits_width = _output_layer(model).target_dim
    assert logits_width == NUM_ITEMS + 1 and all(shape[-1] != logits_width for shape in products.shapes)
    assert actual.keys() == expected.keys() and len(actual) == 6
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


def test_evaluate_keeps_the_logits_for_metrics_that_need_them(op_calls):
    """A metric that runs Transformers4Rec's own update (built before patching) gets the logits."""
    torch.manual_seed(0)
    batch = example.synthetic_batch(NUM_ITEMS, LENGTHS, LENGTH)
    model = example.build_model(example.tiny_schema(NUM_ITEMS, LENGTH), "mlm", LENGTH)
    (task,) = model.prediction_tasks
    task.metrics.append(t4r_ranking_metric.MeanReciprocalRankAt(top_ks=[3], labels_onehot=True))
    expected = evaluate(model, batch)
    with fastmask.patched_transformers4rec():
        op_calls.clear()
        actual = evaluate(model, batch)
    assert "target_ranks_from_hidden" not in op_calls and "target_ranks" in op_calls
    assert actual.keys() == expected.keys() and all(torch.equal(actual[key], expected[key]) for key in expected)


@pytest.mark.parametrize("weight_tying", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_inference_top_k_from_hidden_states(weight_tying, temperature):
    torch.manual_seed(0)
    batch = example.synthetic_batch(NUM_ITEMS, LENGTHS, LENGTH)
    model = example.build_model(example.tiny_schema(NUM_ITEMS, LENGTH), "clm", LENGTH, weight_tying=weight_tying)
    layer = _output_layer(model)
    layer.softmax_temperature = temperature
    model.eval()
    model.top_k = 7
    hidden = []
    hook = layer.register_forward_hook(lambda module, args, output: hidden.append(args[0]))
    with torch.no_grad():
        expected_scores, expected_ids = model(batch)
    hook.remove()
    with fastmask.patched_transformers4rec(), torch.no_grad(), _Products() as products:
        scores, ids = model(batch)
    assert products.fastmask_ops == ["topk_from_hidden"]
    assert all(shape[-1] != layer.target_dim for shape in products.shapes)
    assert torch.equal(ids, expected_ids)
    # The same scores up to float32 rounding of two orders of summation: |error| <= gamma(d + 1) sum |h_i w_i|.
    weight = layer.item_embedding_table.weight if weight_tying else layer.output_layer
    magnitude = (hidden[0].double().abs() @ weight.double().abs().T).gather(1, ids)
    d = hidden[0].shape[1]
    bound = 2 * (d + 1) * 2.0**-24 / (1 - (d + 1) * 2.0**-24) * magnitude / temperature
    assert ((scores.double() - expected_scores.double()).abs() <= bound).all()


# -- checkpoints ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("masking", MASKINGS)
def test_checkpoints_load_across_patched_and_unpatched_models(masking):
    schema = example.tiny_schema(NUM_ITEMS, LENGTH)
    batch = example.synthetic_batch(NUM_ITEMS, LENGTHS, LENGTH)
    torch.manual_seed(0)
    plain = example.build_model(schema, masking, LENGTH)
    train_step(plain, batch)
    with fastmask.patched_transformers4rec():
        torch.manual_seed(1)
        fast = example.build_model(schema, masking, LENGTH)
        fast.load_state_dict(plain.state_dict())
        fast.eval()
        with torch.no_grad():
            fast_predictions = fast(batch, testing=True)["predictions"]
    plain_state, fast_state = plain.state_dict(), fast.state_dict()
    assert list(plain_state) == list(fast_state)
    assert any(key.endswith("masked_item_embedding") for key in fast_state)
    for key, value in plain_state.items():
        assert fast_state[key].shape == value.shape and torch.equal(fast_state[key], value), key

    torch.manual_seed(2)
    fresh = example.build_model(schema, masking, LENGTH)
    fresh.load_state_dict(fast_state)
    for model in (plain, fresh):
        model.eval()
        with torch.no_grad():
            predictions = model(batch, testing=True)["predictions"]
        assert torch.equal(predictions, fast_predictions)


# -- the README example --------------------------------------------------------------------------------


def test_example_runs(op_calls, capsys):
    result = example.main("plm")
    assert not fastmask.is_transformers4rec_patched()
    assert set(op_calls) == {"plm_train", "plm_eval", "target_ranks_from_hidden"}
    assert torch.isfinite(torch.tensor(result["loss"]))
    assert "next-item/ndcg_at_10" in result and "plm: training loss" in capsys.readouterr().out


@pytest.mark.parametrize("ours, theirs", [(fm_masking, t4r_masking), (fm_ranking_metric, t4r_ranking_metric)])
def test_public_names_cover_transformers4rec(ours, theirs):
    """Every class Transformers4Rec's module defines, and its registry, is in fastmask's ``__all__``."""
    public = {
        name for name, value in vars(theirs).items()
        if not name.startswith("_")
        and (getattr(value, "__module__", None) == theirs.__name__ or name.endswith("_registry"))
    }
    assert public and public <= set(ours.__all__), public - set(ours.__all__)
