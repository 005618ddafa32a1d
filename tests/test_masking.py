"""The drop-in masking API: surface, modes, T4Rec's rules, seeding, edge rows and bad input."""
import inspect

import numpy as np
import pytest
import torch
from torch import nn

import fastmask
from fastmask import masking as M
from fastmask.reference import masking as rules

from helpers import assert_same

HIDDEN = 8


def _ids():
    return torch.tensor(
        [[5, 3, 2, 0, 0, 0], [1, 2, 3, 4, 5, 6], [7, 0, 0, 0, 0, 0], [0, 4, 0, 8, 9, 0]]
    )


def _inputs(ids, dtype=torch.float64):
    return torch.randn(*ids.shape, HIDDEN, dtype=dtype)


# -- surface -------------------------------------------------------------------------------------
def test_registry_names_order_and_classes():
    assert list(M.masking_registry.keys()) == [
        "clm", "causal", "mlm", "masked", "plm", "permutation", "rtd", "replacement"
    ]
    assert M.masking_registry["plm"] is M.PermutationLanguageModeling
    assert M.masking_registry.parse("causal") is M.CausalLanguageModeling
    assert M.masking_registry.parse(M.MaskedLanguageModeling) is M.MaskedLanguageModeling
    with pytest.raises(KeyError):
        M.masking_registry.register("mlm")(M.MaskedLanguageModeling)
    assert issubclass(M.ReplacementLanguageModeling, M.MaskedLanguageModeling)


@pytest.mark.parametrize(
    "cls, defaults",
    [
        (M.MaskSequence, dict(padding_idx=0, eval_on_last_item_seq_only=True)),
        (M.CausalLanguageModeling,
         dict(padding_idx=0, eval_on_last_item_seq_only=True, train_on_last_item_seq_only=False)),
        (M.MaskedLanguageModeling, dict(padding_idx=0, eval_on_last_item_seq_only=True, mlm_probability=0.15)),
        (M.PermutationLanguageModeling,
         dict(padding_idx=0, eval_on_last_item_seq_only=True, plm_probability=1 / 6, max_span_length=5,
              permute_all=False)),
        (M.ReplacementLanguageModeling, dict(padding_idx=0, eval_on_last_item_seq_only=True, sample_from_batch=False)),
    ],
)
def test_constructor_arguments_defaults_and_attributes(cls, defaults):
    params = inspect.signature(cls.__init__).parameters
    positional = [name for name, p in params.items() if p.kind == p.POSITIONAL_OR_KEYWORD][1:]
    assert positional == ["hidden_size", *defaults]
    module = cls(HIDDEN, unknown_kwarg=1)  # extra kwargs are swallowed, as upstream
    for name, value in defaults.items():
        assert params[name].default == value and getattr(module, name) == value
    assert module.hidden_size == HIDDEN and module.mask_schema is None and module.masked_targets is None
    assert [name for name, _ in module.named_parameters()] == ["masked_item_embedding"]
    assert list(module.state_dict()) == ["masked_item_embedding"] and not list(module.buffers())
    if cls is M.PermutationLanguageModeling:
        assert module.perm_mask is None and module.target_mapping is None


def test_state_dict_loads_both_ways_with_a_t4rec_shaped_module():
    class UpstreamShaped(nn.Module):
        def __init__(self):
            super().__init__()
            self.masked_item_embedding = nn.Parameter(torch.randn(HIDDEN))

    upstream, ours = UpstreamShaped(), M.MaskedLanguageModeling(HIDDEN)
    ours.load_state_dict(upstream.state_dict())
    assert torch.equal(ours.masked_item_embedding, upstream.masked_item_embedding)
    torch.nn.init.normal_(ours.masked_item_embedding)
    upstream.load_state_dict(ours.state_dict())
    assert torch.equal(ours.masked_item_embedding, upstream.masked_item_embedding)


def test_transformer_arguments():
    plm = M.PermutationLanguageModeling(HIDDEN)
    plm.compute_masked_targets(_ids(), training=True)
    args = plm.transformer_arguments
    assert set(args) == {"target_mapping", "perm_mask"} and args["perm_mask"] is plm.perm_mask
    assert M.MaskedLanguageModeling(HIDDEN).transformer_arguments == {}
    assert M.CausalLanguageModeling(HIDDEN).forward_output_size((2, 3, HIDDEN)) == (2, 3, HIDDEN)


# -- modes, shapes, dtypes ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["clm", "mlm", "plm", "rtd"])
@pytest.mark.parametrize("mode", ["train", "eval", "inference"])
@pytest.mark.parametrize("id_dtype", [torch.int64, torch.int32])
def test_modes_shapes_and_dtypes(name, mode, id_dtype):
    ids = _ids()[:3].to(id_dtype)  # no empty row: training needs an item per row
    inputs = _inputs(ids)
    module = M.masking_registry[name](HIDDEN)
    training, testing = mode == "train", mode == "eval"
    out = module(inputs, ids, training=training, testing=testing)
    grows = name in ("mlm", "rtd") and mode == "inference"
    length = ids.shape[1] + grows
    assert out.shape == (3, length, HIDDEN) and out.dtype == torch.float64
    assert module.mask_schema.dtype == torch.bool and module.mask_schema.shape == (3, length)
    assert module.masked_targets.dtype == id_dtype and module.masked_targets.shape == (3, length)
    if name == "plm":
        square = (3, ids.shape[1], ids.shape[1])
        assert module.perm_mask.shape == square and module.target_mapping.shape == square
        assert module.perm_mask.dtype == (torch.float32 if training else torch.int64)
        assert module.target_mapping.dtype == torch.float32


def test_plm_eval_all_positions_keeps_reference_dtypes():
    plm = M.PermutationLanguageModeling(HIDDEN, eval_on_last_item_seq_only=False)
    ids = _ids()
    info = plm.compute_masked_targets(ids, training=False)
    schema, targets = rules.next_item_targets(ids, 0)
    assert_same((info.schema, info.targets), (schema, targets))
    assert plm.target_mapping.dtype == torch.int64  # one_hot, as upstream
    assert torch.equal(plm.target_mapping[2], torch.eye(6, dtype=torch.int64))
    assert torch.equal(plm.perm_mask[1], torch.ones(6, 6, dtype=torch.int64).triu(1))


def test_plm_eval_last_item_by_hand():
    plm = M.PermutationLanguageModeling(HIDDEN)
    ids = _ids()
    info = plm.compute_masked_targets(ids, training=False)
    # Row 3 has 3 items but position n - 1 = 2 holds padding: upstream indexes by count, so no target.
    assert info.targets.tolist() == [[0, 0, 2, 0, 0, 0], [0, 0, 0, 0, 0, 6], [7, 0, 0, 0, 0, 0], [0] * 6]
    assert torch.equal(plm.target_mapping[3], torch.eye(6))
    expected = torch.ones(6, 6, dtype=torch.int64).triu(1)
    expected[:, 2] = 1
    assert torch.equal(plm.perm_mask[3], expected)  # 3 items -> column n - 1 = 2, padding in the middle


def test_apply_mask_semantics():
    ids = torch.tensor([[5, 3, 2, 0]])
    inputs = _inputs(ids)
    mlm = M.MaskedLanguageModeling(HIDDEN)
    emb = mlm.masked_item_embedding.detach().double()
    out = mlm(inputs, ids, training=False, testing=True)  # eval: last item replaced
    assert torch.equal(out[0, 2], emb) and torch.equal(out[0, :2], inputs[0, :2])
    out = mlm(inputs, ids, training=False, testing=False)  # inference: [MASK] appended at n
    assert out.shape[1] == 5 and torch.equal(out[0, 3], emb) and torch.equal(out[0, :3], inputs[0, :3])
    assert torch.equal(out[0, 4], inputs[0, 3])
    clm = M.CausalLanguageModeling(HIDDEN)
    emb = clm.masked_item_embedding.detach().double()
    out = clm(inputs, ids, training=True)  # truncated inputs, positions without a target replaced
    assert torch.equal(out[0, :2], inputs[0, :2]) and torch.equal(out[0, 2], emb) and torch.equal(out[0, 3], emb)
    out = clm(inputs, ids, training=False, testing=False)  # inference: only padding replaced
    assert torch.equal(out[0, :3], inputs[0, :3]) and torch.equal(out[0, 3], emb)
    plm = M.PermutationLanguageModeling(HIDDEN)
    assert plm(inputs, ids, training=False, testing=False) is inputs


def test_clm_last_item_training_flag():
    ids = _ids()[:2]
    clm = M.CausalLanguageModeling(HIDDEN, train_on_last_item_seq_only=True)
    info = clm.compute_masked_targets(ids, training=True)
    assert info.targets.tolist() == [[0, 2, 0, 0, 0, 0], [0, 0, 0, 0, 6, 0]]
    assert torch.equal(info.schema, ids != 0)
    info = M.CausalLanguageModeling(HIDDEN).compute_masked_targets(ids, training=True)
    assert info.targets.tolist() == [[3, 2, 0, 0, 0, 0], [2, 3, 4, 5, 6, 0]]


# -- random rules --------------------------------------------------------------------------------
def _random_batch(seed, batch=64, length=24, padding_idx=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (batch, length), generator=gen)
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    ids[torch.arange(length)[None, :] >= lengths[:, None]] = padding_idx
    return ids


@pytest.mark.parametrize(
    "cls", [M.MaskedLanguageModeling, M.ReplacementLanguageModeling, M.PermutationLanguageModeling]
)
def test_training_targets_follow_the_rules(cls):
    module = cls(HIDDEN, padding_idx=0)
    for seed in range(5):
        ids = _random_batch(seed)
        if cls is M.PermutationLanguageModeling:
            # Upstream's PLM counts span positions that run into padding when it checks for
            # "every item is a target", so padded rows may end with no target: see the next test.
            ids = torch.where(ids == 0, 7, ids)
        info = module.compute_masked_targets(ids, training=True)
        nonpad = ids != 0
        count, targets = nonpad.sum(1), info.schema.sum(1)
        assert not (info.schema & ~nonpad).any()  # only non-padding
        assert torch.equal(info.targets, torch.where(info.schema, ids, 0))
        assert (targets[count >= 2] >= 1).all()  # at least one
        assert (targets[count == 1] == 0).all()  # the forced one is dropped again, as upstream
        assert (targets < count).all() | (count == 0).all()  # never all


def test_plm_padded_span_quirk():
    # Upstream checks "every item is a target" on the mask before padding is dropped. With n = 2,
    # a span over [1, 3) counts 2 == n, so one of {1, 2} is dropped: dropping 1 leaves no target.
    plm = M.PermutationLanguageModeling(HIDDEN, max_span_length=2, plm_probability=0.5)
    ids = torch.tensor([[4, 5, 0, 0]]).repeat(400, 1)
    targets = plm.compute_masked_targets(ids, training=True).schema.sum(1)
    assert (targets == 0).any() and (targets == 1).any() and (targets <= 1).all()


def test_plm_perm_mask_meaning():
    plm = M.PermutationLanguageModeling(HIDDEN)
    for seed in range(5):
        ids = _random_batch(seed, length=16)
        plm.compute_masked_targets(ids, training=True)
        perm, mask = plm.perm_mask.bool(), plm.mask_schema
        assert torch.equal(plm.target_mapping, torch.eye(16).expand(64, 16, 16))
        assert not (perm & ~mask[:, None, :]).any()  # non-targets (padding included) are visible
        assert (perm | ~(~mask[:, :, None] & mask[:, None, :])).all()  # non-targets never see targets
        both = mask[:, :, None] & mask[:, None, :]
        assert (perm.diagonal(dim1=1, dim2=2) == mask).all()  # a target never sees itself
        off = both & ~torch.eye(16, dtype=torch.bool)
        assert torch.equal((perm ^ perm.transpose(1, 2)) & off, off)  # an order: exactly one sees the other
        for b in range(64):  # a total order: target q sees exactly its predecessors, all distinct counts
            m = mask[b].nonzero().flatten()
            seen = (~perm[b][m][:, m]).sum(1).sort().values
            assert torch.equal(seen, torch.arange(len(m)))


def test_plm_permute_all():
    plm = M.PermutationLanguageModeling(HIDDEN, permute_all=True)
    ids = _random_batch(1)
    info = plm.compute_masked_targets(ids, training=True)
    count = (ids != 0).sum(1)
    assert torch.equal(info.schema.sum(1), count - 1)  # every item, then one dropped (all were targets)
    assert not plm.target_mapping.any()  # upstream leaves it all zero


def test_mlm_rate_matches_probability():
    p, length = 0.3, 40
    ids = torch.randint(1, 100, (3000, length), generator=torch.Generator().manual_seed(0))
    mask = M.MaskedLanguageModeling(HIDDEN, mlm_probability=p).compute_masked_targets(ids, training=True).schema
    rate = mask.double().mean(0)
    expected = p + (1 - p) / length  # Bernoulli plus the forced target; dropping one is negligible here
    sigma = (expected * (1 - expected) / 3000) ** 0.5
    assert (rate - expected).abs().max() < 5 * sigma


def test_plm_rate_matches_probability():
    ids = torch.randint(1, 100, (400, 200), generator=torch.Generator().manual_seed(0))
    module = M.PermutationLanguageModeling(HIDDEN, plm_probability=1 / 6)
    mask = module.compute_masked_targets(ids, training=True).schema
    assert abs(mask.double().mean().item() - 1 / 6) < 0.01


# -- seeding -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mlm", "plm", "rtd"])
def test_manual_seed_reproduces_and_seeds_differ(name):
    module = M.masking_registry[name](HIDDEN)
    ids = _random_batch(0)
    torch.manual_seed(5)
    first = module.compute_masked_targets(ids, training=True).schema
    extra = getattr(module, "perm_mask", None)
    torch.manual_seed(5)
    assert torch.equal(module.compute_masked_targets(ids, training=True).schema, first)
    if extra is not None:
        assert torch.equal(module.perm_mask, extra)
    assert not torch.equal(module.compute_masked_targets(ids, training=True).schema, first)


def test_generator_option():
    ids = _random_batch(0)
    a = M.MaskedLanguageModeling(HIDDEN, generator=torch.Generator().manual_seed(9))
    b = M.MaskedLanguageModeling(HIDDEN, generator=torch.Generator().manual_seed(9))
    first, second = (module.compute_masked_targets(ids, training=True) for module in (a, b))
    assert_same((first.schema, first.targets), (second.schema, second.targets))


def test_masks_are_the_ops_output_for_the_drawn_seed():
    ids = _random_batch(2)
    mlm = M.MaskedLanguageModeling(HIDDEN, mlm_probability=0.2)
    torch.manual_seed(1)
    seed = M.draw_seed(ids.device)
    torch.manual_seed(1)
    schema = mlm.compute_masked_targets(ids, training=True).schema
    threshold = fastmask.reference.philox.bernoulli_threshold(0.2)
    assert_same(schema, rules.mlm_train(ids, seed, 0, threshold)[0])


# -- edge rows -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mlm", "rtd", "plm"])
def test_all_padding_row_raises_by_default_and_can_be_skipped(name):
    ids = torch.tensor([[3, 4, 5], [0, 0, 0]])
    with pytest.raises(ValueError, match=r"rows \[1\] contain only padding.*skip_empty_rows=True"):
        M.masking_registry[name](HIDDEN).compute_masked_targets(ids, training=True)
    info = M.masking_registry[name](HIDDEN, skip_empty_rows=True).compute_masked_targets(ids, training=True)
    assert not info.schema[1].any() and info.schema[0].any()
    M.masking_registry[name](HIDDEN).compute_masked_targets(ids, training=False, testing=True)  # eval is fine


@pytest.mark.parametrize("name", ["clm", "mlm", "plm", "rtd"])
def test_sequence_length_one_and_full_rows(name):
    module = M.masking_registry[name](HIDDEN)
    ids = torch.tensor([[4], [2]])
    for training, testing in [(True, False), (False, True), (False, False)]:
        out = module(_inputs(ids), ids, training=training, testing=testing)
        assert out.shape[0] == 2 and not torch.isnan(out).any()
    full = torch.arange(1, 13).reshape(2, 6)
    info = module.compute_masked_targets(full, training=True)
    if name != "clm":
        assert ((info.schema.sum(1) >= 1) & (info.schema.sum(1) < 6)).all()


# -- bad input -----------------------------------------------------------------------------------
def test_bad_item_ids():
    mlm = M.MaskedLanguageModeling(HIDDEN)
    with pytest.raises(ValueError, match="item_ids must be 2-D"):
        mlm.compute_masked_targets(torch.tensor([1, 2, 3]), training=True)
    with pytest.raises(TypeError, match=r"item_ids must be an integer tensor \(int64, int32, int16, int8 or uint8\)"):
        mlm.compute_masked_targets(torch.ones(2, 3), training=True)
    with pytest.raises(ValueError, match="non-negative"):
        mlm.compute_masked_targets(torch.tensor([[1, -2, 3]]), training=True)
    with pytest.raises(TypeError, match="item_ids must be a torch.Tensor"):
        mlm.compute_masked_targets([[1, 2]], training=True)


@pytest.mark.parametrize("name", ["clm", "mlm", "plm", "rtd"])
def test_negative_padding_idx(name):
    # A padding_idx of -1 is valid in the reference: only other negative ids are refused.
    ids = _ids()
    padded = torch.where(ids == 0, -1, ids)
    for training, testing in [(True, False), (False, True), (False, False)]:
        torch.manual_seed(3)
        expected = M.masking_registry[name](HIDDEN).compute_masked_targets(ids, training=training, testing=testing)
        torch.manual_seed(3)
        module = M.masking_registry[name](HIDDEN, padding_idx=-1)
        info = module.compute_masked_targets(padded, training=training, testing=testing)
        module(_inputs(padded), padded, training=training, testing=testing)
        if name != "clm":  # CLM appends a literal 0 target, not padding
            assert torch.equal(info.schema, expected.schema)
            assert torch.equal(info.targets, torch.where(expected.schema, expected.targets, -1))
    with pytest.raises(ValueError, match="non-negative"):
        M.masking_registry[name](HIDDEN, padding_idx=-1).compute_masked_targets(
            torch.tensor([[1, -2, 3]]), training=True
        )


def test_bad_inputs():
    mlm, ids = M.MaskedLanguageModeling(HIDDEN), _ids()[:3]
    with pytest.raises(ValueError, match=rf"inputs must have shape \(batch, seq_len, {HIDDEN}\)"):
        mlm(torch.randn(3, 6, HIDDEN + 1), ids, training=True)
    with pytest.raises(ValueError, match="inputs must have shape"):
        mlm(torch.randn(3, 6), ids, training=True)
    with pytest.raises(ValueError, match="must match item_ids"):
        mlm(torch.randn(3, 5, HIDDEN), ids, training=True)
    with pytest.raises(TypeError, match="floating-point"):
        mlm(torch.ones(3, 6, HIDDEN, dtype=torch.long), ids, training=True)


def test_numpy_integer_arguments():
    # The reference takes any integer type, as when sizes come from numpy or a config loader.
    module = M.PermutationLanguageModeling(np.int64(HIDDEN), padding_idx=np.int32(0), max_span_length=np.int64(3))
    assert (module.hidden_size, module.padding_idx, module.max_span_length) == (HIDDEN, 0, 3)
    assert all(type(v) is int for v in (module.hidden_size, module.padding_idx, module.max_span_length))
    ids = _ids()
    module(_inputs(ids), ids, training=True)


@pytest.mark.parametrize(
    "cls, kwargs, error, match",
    [
        (M.MaskedLanguageModeling, dict(mlm_probability=-0.1), ValueError, "mlm_probability must be in"),
        (M.MaskedLanguageModeling, dict(mlm_probability=1.5), ValueError, "mlm_probability must be in"),
        (M.MaskedLanguageModeling, dict(mlm_probability="x"), TypeError, "mlm_probability must be a float"),
        (M.PermutationLanguageModeling, dict(plm_probability=-1), ValueError, "plm_probability must be in"),
        (M.PermutationLanguageModeling, dict(max_span_length=0), ValueError, "max_span_length must be >= 1"),
        (M.PermutationLanguageModeling, dict(max_span_length=2.0), TypeError, "max_span_length must be an int"),
        (M.PermutationLanguageModeling, dict(plm_probability=1e-12), ValueError, "below 2\\*\\*31"),
        (M.CausalLanguageModeling, dict(padding_idx=None), TypeError, "padding_idx must be an int"),
    ],
)
def test_bad_constructor_arguments(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(HIDDEN, **kwargs)
    with pytest.raises(ValueError, match="hidden_size must be >= 1"):
        cls(0)


@pytest.mark.parametrize("name", ["mlm", "rtd"])
def test_mlm_probability_zero_leaves_the_forced_target(name):
    # The reference accepts 0: no Bernoulli target, so each row keeps only its forced one.
    ids = _random_batch(5)
    options = dict(use_mlm_probability=True) if name == "rtd" else {}
    info = M.masking_registry[name](HIDDEN, mlm_probability=0.0, **options).compute_masked_targets(ids, training=True)
    items = (ids != 0).sum(1)
    assert torch.equal(info.schema.sum(1), (items > 1).long())


def test_inputs_are_not_modified():
    ids = _random_batch(3)
    before = ids.clone()
    inputs = _inputs(ids)
    inputs_before = inputs.clone()
    for name in ["clm", "mlm", "plm", "rtd"]:
        M.masking_registry[name](HIDDEN)(inputs, ids, training=True)
    assert torch.equal(ids, before) and torch.equal(inputs, inputs_before)


# -- RTD -----------------------------------------------------------------------------------------
def _upstream_fake_tokens(module, itemid_seq, target_flat, updates_or_batch_updates):
    """T4Rec's get_fake_tokens with the sample given."""
    non_pad_mask = target_flat != module.padding_idx
    pos_labels = torch.masked_select(target_flat, non_pad_mask)
    if module.sample_from_batch:
        updates = pos_labels[updates_or_batch_updates]
    else:
        updates = updates_or_batch_updates
    corrupted_labels = target_flat.clone().scatter(-1, non_pad_mask.nonzero().flatten(), updates)
    disc = (corrupted_labels != target_flat).view(-1, itemid_seq.size(1))
    corrupted = itemid_seq.clone().reshape(-1).scatter(-1, non_pad_mask.nonzero().flatten(), updates)
    return corrupted.view(-1, itemid_seq.size(1)), disc


@pytest.mark.parametrize("sample_from_batch", [False, True])
def test_get_fake_tokens_matches_upstream(sample_from_batch):
    rtd = M.ReplacementLanguageModeling(HIDDEN, sample_from_batch=sample_from_batch)
    ids = _random_batch(4, batch=16, length=10)
    target_flat = rtd.compute_masked_targets(ids, training=True).targets.flatten()
    num_targets = int((target_flat != 0).sum())
    logits = torch.randn(num_targets, num_targets if sample_from_batch else 50)
    torch.manual_seed(3)
    corrupted, disc, batch_updates = rtd.get_fake_tokens(ids, target_flat, logits)
    torch.manual_seed(3)
    sample = rtd.sample_from_softmax(logits)
    want_corrupted, want_disc = _upstream_fake_tokens(rtd, ids, target_flat, sample)
    assert torch.equal(corrupted, want_corrupted) and torch.equal(disc, want_disc)
    assert disc.dtype == torch.bool
    if sample_from_batch:
        assert torch.equal(batch_updates, sample)
    else:
        assert batch_updates == []
    with pytest.raises(ValueError, match="one row per target"):
        rtd.get_fake_tokens(ids, target_flat, logits[1:])


def test_sample_from_softmax_is_gumbel_max_of_the_drawn_seed():
    rtd = M.ReplacementLanguageModeling(HIDDEN)
    logits = torch.randn(7, 33)  # before seeding: construction draws the embedding
    torch.manual_seed(0)
    seed = int(M.draw_seed(logits.device))
    torch.manual_seed(0)
    sample = rtd.sample_from_softmax(logits)
    assert sample.dtype == torch.int64 and sample.shape == (7,)
    assert torch.equal(sample, fastmask.reference.sampling.gumbel_argmax(logits, seed))
    with pytest.raises(ValueError, match="logits must be 2-D"):
        rtd.sample_from_softmax(torch.randn(3))
    with pytest.raises(TypeError, match="logits must be float32, float16, bfloat16 or float64, got torch.int64"):
        rtd.sample_from_softmax(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="logits must be a floating-point torch.Tensor"):
        rtd.sample_from_softmax([[1.0, 2.0]])


# -- backends ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, training, ops_called", [
    ("mlm", True, "mlm_train"), ("rtd", True, "mlm_train"), ("plm", True, "plm_train"), ("plm", False, "plm_eval"),
    ("mlm", False, "last_item_targets"), ("clm", False, "clm_last_item_targets"), ("clm", True, "next_item_targets"),
])
def test_modules_run_on_the_forced_backend(any_backend, name, training, ops_called):
    ids = _random_batch(0).to(any_backend.device)
    with fastmask.use_backend(any_backend.name):
        M.masking_registry[name](HIDDEN).compute_masked_targets(ids, training=training, testing=True)
    assert fastmask.ops.last_backend(ops_called) == any_backend.name


@pytest.mark.parametrize("name", ["clm", "mlm", "rtd"])
def test_eval_on_all_positions(name):
    ids = _ids()
    info = M.masking_registry[name](HIDDEN, eval_on_last_item_seq_only=False).compute_masked_targets(
        ids, training=False, testing=True
    )
    assert info.targets.tolist() == [
        [3, 2, 0, 0, 0, 0], [2, 3, 4, 5, 6, 0], [0, 0, 0, 0, 0, 0], [4, 0, 8, 9, 0, 0]
    ]
    assert torch.equal(info.schema, info.targets != 0)


def test_value_checks_run_where_they_are_free(monkeypatch):
    from types import SimpleNamespace

    from fastmask._checks import data_checks_enabled

    cpu, gpu = torch.zeros(1), SimpleNamespace(is_cuda=True, is_meta=False)
    assert not data_checks_enabled(torch.zeros(1, device="meta"), True)  # no values to read
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert data_checks_enabled(cpu) and data_checks_enabled(cpu, True) and not data_checks_enabled(cpu, False)
    # By default a GPU tensor is not read back (it would stall the stream); True asks for it.
    assert not data_checks_enabled(gpu) and data_checks_enabled(gpu, True) and not data_checks_enabled(gpu, False)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert not data_checks_enabled(gpu, True)


def test_rtd_ignores_mlm_probability_as_transformers4rec_unless_asked():
    ids = _random_batch(4)

    def schema(cls, **options):
        module = cls(HIDDEN, generator=torch.Generator().manual_seed(1), **options)
        return module, module.compute_masked_targets(ids, training=True).schema

    with pytest.warns(UserWarning, match="ignores mlm_probability, as Transformers4Rec's does"):
        faithful, ignored = schema(M.ReplacementLanguageModeling, mlm_probability=0.6)
    assert faithful.mlm_probability == 0.15
    assert_same(ignored, schema(M.MaskedLanguageModeling, mlm_probability=0.15)[1])
    applied, used = schema(M.ReplacementLanguageModeling, mlm_probability=0.6, use_mlm_probability=True)
    assert applied.mlm_probability == 0.6
    assert_same(used, schema(M.MaskedLanguageModeling, mlm_probability=0.6)[1])
    assert not torch.equal(ignored, used)
