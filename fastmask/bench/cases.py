"""What the benchmark times: one ``Case`` per operation and shape.

The shapes are stated once, in ``SHAPES`` (``QUICK_SHAPES`` for smoke runs); the pytest-benchmark
suite in ``bench/`` reads them from here. fastmask is timed through its public API: the masking
modules, the ranking metrics, the sequence policies, and the ops ``gumbel_argmax`` (through the
RTD module) and ``target_ranks``.
"""
from __future__ import annotations

import fnmatch
import itertools
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

HIDDEN_SIZE = 64
N_ITEMS = 50_000  # item ids of the masking cases are in [1, N_ITEMS)
TOP_KS = [10, 20]
BERT4REC_MASK_RATIO = 0.2

# Baselines: the library whose code a case's ``baseline`` row runs.
T4REC = "t4rec"
RECBOLE = "recbole"
MATERIALISED = "matmul"  # torch's matmul into the (N, V) scores, then the op on them

# How a case is timed (see ``timing.Timer``).
PER_CALL = "per call"  # each call on its own; on a GPU with a cold L2 cache
BACK_TO_BACK = "back to back"  # calls in a row, time / calls; on a GPU also under CUDA-graph replay


@dataclass(frozen=True)
class Shapes:
    """The shapes of one benchmark run."""

    call: tuple  # (B, L): per-call latency of each masking module
    masking_small: tuple  # (B, L)
    masking_large: tuple  # (B, L)
    gumbel: tuple  # (P, V)
    metrics_onehot: tuple  # (N, V)
    metrics_multihot: tuple  # (N, V)
    ranks: tuple  # (N, V)
    bert4rec: tuple  # ((B, L) long sequences, (B, L) wide batch)
    merlin: tuple  # (B, L)
    sampler: tuple  # (max_n_samples, max_id, number of labels)
    hidden: tuple  # ((N, d, V) with the materialised baseline, (N, d, V) where the scores would not fit)


_SHARED = dict(
    masking_small=(256, 20), masking_large=(512, 200), bert4rec=((256, 200), (2048, 50)), merlin=(512, 200),
    sampler=(1000, 1_000_000, 2048),
)
SHAPES = {
    "cpu": Shapes(call=(2, 4), gumbel=(2048, 50_000), metrics_onehot=(2048, 50_000),
                  metrics_multihot=(512, 50_000), ranks=(2048, 50_000),
                  hidden=((1024, 64, 200_000), (1024, 64, 2_000_000)), **_SHARED),
    "cuda": Shapes(call=(256, 20), gumbel=(4096, 100_000), metrics_onehot=(4096, 1_000_000),
                   metrics_multihot=(1024, 50_000), ranks=(4096, 1_000_000),
                   hidden=((4096, 128, 1_000_000), (4096, 128, 10_000_000)), **_SHARED),
}
QUICK_SHAPES = Shapes(
    call=(2, 4), masking_small=(8, 12), masking_large=(16, 24), gumbel=(8, 512), metrics_onehot=(32, 1000),
    metrics_multihot=(16, 1000), ranks=(32, 1000), bert4rec=((8, 20), (16, 10)), merlin=(8, 20),
    sampler=(20, 1000, 16), hidden=((16, 8, 1000), (16, 8, 3000)),
)
HIDDEN_TOP_K = 10
REFERENCE_MAX_MULTIPLY_ADDS = 10**9


def shapes(device_type: str, quick: bool = False) -> Shapes:
    return QUICK_SHAPES if quick else SHAPES[device_type]


@dataclass
class Case:
    """One operation at one shape: how to build its inputs and what each contender calls.

    ``fastmask_fn(inputs)`` and ``baseline_fn(library, inputs)`` return the call to time; ``library``
    is the loaded baseline named by ``baseline`` (``T4REC``, ``RECBOLE``), or the case has none.
    """

    name: str  # unique id, e.g. "plm_train_large"
    op: str  # table label, e.g. "plm_train"
    shape: dict
    dtype: str
    make_inputs: Callable[[torch.device], dict]
    fastmask_fn: Callable[[dict], Callable[[], object]]
    baseline: Optional[str]
    baseline_fn: Optional[Callable[[object, dict], Callable[[], object]]]
    bytes_read: int
    bytes_written: int
    # (shape, dtype) of every output, for the floor row: allocate each once and write it once.
    floor_outputs: list = field(default_factory=list)
    timing: str = PER_CALL
    bounds: bool = False  # Gumbel sampling: time the read and Philox bounds beside it
    reference_skip: Optional[str] = None  # why the reference is not timed on this case, if it is not

    @property
    def shape_str(self) -> str:
        return " ".join(f"{k}={_human(v) if isinstance(v, int) else v}" for k, v in self.shape.items())

    @property
    def bytes_moved(self) -> int:
        return self.bytes_read + self.bytes_written


def _human(n: int) -> str:
    for unit, size in (("M", 10**6), ("k", 10**3)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def _numel(shape) -> int:
    return int(np.prod(shape))


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}[dtype]


def make_item_ids(batch: int, length: int, device: torch.device, seed: int = 0, min_length: int = 1) -> torch.Tensor:
    """Right-padded ids: row lengths uniform in [min_length, L], items in [1, N_ITEMS), padding 0."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_length, length + 1, (batch, 1), generator=gen)
    ids = torch.randint(1, N_ITEMS, (batch, length), generator=gen)
    ids = ids.masked_fill(torch.arange(length)[None, :] >= lengths, 0)
    return ids.to(device)


def make_scores(rows: int, vocab: int, device: torch.device, seed: int, dtype=torch.float32) -> torch.Tensor:
    """Normal scores drawn on ``device`` itself (a (4096, 1M) matrix never goes through host memory)."""
    gen = torch.Generator(device).manual_seed(seed)
    return torch.randn(rows, vocab, generator=gen, device=device).to(dtype)


# -- masking -------------------------------------------------------------------------------------
# Per-call cases: case name -> (module class, training).
MASKING_CALLS = {
    "call_mlm_train": ("MaskedLanguageModeling", True),
    "call_plm_train": ("PermutationLanguageModeling", True),
    "call_rtd_train": ("ReplacementLanguageModeling", True),
    "call_clm_train": ("CausalLanguageModeling", True),
    "call_plm_eval": ("PermutationLanguageModeling", False),
}


def _masking_outputs(klass: str, training: bool, batch: int, length: int) -> list:
    """(shape, dtype) of what ``compute_masked_targets`` writes (PLM eval's target_mapping is an
    expanded identity: no bytes)."""
    outputs = [((batch, length), torch.bool), ((batch, length), torch.int64)]
    if klass == "PermutationLanguageModeling":
        square = (batch, length, length)
        outputs += [(square, torch.float32)] * 2 if training else [(square, torch.int64)]
    return outputs


def _masking_case(name, op, batch, length, klass, training, floor=False, timing=PER_CALL) -> Case:
    outputs = _masking_outputs(klass, training, batch, length)

    def call(namespace, inputs):
        module = getattr(namespace, klass)(hidden_size=HIDDEN_SIZE)  # built once, outside the timing
        return lambda: module.compute_masked_targets(inputs["ids"], training=training)

    def fastmask_fn(inputs):
        from .. import masking

        return call(masking, inputs)

    return Case(
        name, op, {"B": batch, "L": length}, "int64",
        lambda device: {"ids": make_item_ids(batch, length, device)},
        fastmask_fn, T4REC, lambda t4rec, inputs: call(t4rec.masking, inputs),
        batch * length * 8, sum(_numel(s) * _itemsize(d) for s, d in outputs),
        floor_outputs=outputs if floor else [], timing=timing,
    )


def _call_cases(batch: int, length: int) -> list[Case]:
    return [
        _masking_case(name, name[len("call_"):], batch, length, klass, training, timing=BACK_TO_BACK)
        for name, (klass, training) in MASKING_CALLS.items()
    ]


# -- sampling and ranking ------------------------------------------------------------------------
def _gumbel_case(name: str, rows: int, vocab: int, dtype: torch.dtype, bounds: bool) -> Case:
    def call(namespace, inputs):
        module = namespace.ReplacementLanguageModeling(hidden_size=HIDDEN_SIZE)
        return lambda: module.sample_from_softmax(inputs["logits"])

    def fastmask_fn(inputs):
        from .. import masking

        return call(masking, inputs)

    return Case(
        name, "gumbel", {"P": rows, "V": vocab}, _dtype_name(dtype),
        lambda device: {"logits": make_scores(rows, vocab, device, 1, dtype)},
        fastmask_fn, T4REC, lambda t4rec, inputs: call(t4rec.masking, inputs),
        rows * vocab * _itemsize(dtype), rows * 8, bounds=bounds,
    )


def _metric_modules(namespace, onehot: bool) -> list:
    return [getattr(namespace, name)(top_ks=list(TOP_KS), labels_onehot=onehot)
            for name in ("NDCGAt", "AvgPrecisionAt", "RecallAt")]


def _metrics_case(name: str, rows: int, vocab: int, onehot: bool) -> Case:
    """NDCG, AP and Recall at TOP_KS updated on one batch, as T4Rec's evaluation does.

    fastmask's metrics share one rank pass per batch, keyed by the tensors' identity and version: a
    call on the tensor of the previous call would time a cache hit. So every call gets a new tensor
    object over one of two score matrices, in turn.
    """
    label_key = "targets" if onehot else "labels"

    def make_inputs(device):
        gen = torch.Generator().manual_seed(4)
        if onehot:
            labels = torch.randint(0, vocab, (rows,), generator=gen)
        else:
            labels = torch.zeros(rows, vocab)
            relevant = torch.randint(1, 11, (rows,), generator=gen)  # 1..10 relevant items per row
            columns = torch.randint(0, vocab, (rows, 10), generator=gen)
            keep = torch.arange(10)[None, :] < relevant[:, None]
            labels[torch.arange(rows)[:, None].expand(-1, 10)[keep], columns[keep]] = 1.0
        return {"scores": [make_scores(rows, vocab, device, seed) for seed in (2, 3)], label_key: labels.to(device)}

    def call(namespace, inputs):
        metrics = _metric_modules(namespace, onehot)
        scores, labels = inputs["scores"], inputs[label_key]
        calls = itertools.count()

        def run():
            batch_scores = scores[next(calls) % 2].view(rows, vocab)  # a new tensor object
            batch_labels = labels.view(labels.shape)
            for metric in metrics:
                metric.update(batch_scores, batch_labels)
        return run

    def fastmask_fn(inputs):
        from .. import ranking_metric

        return call(ranking_metric, inputs)

    kind = "one-hot" if onehot else "multi-hot"
    label_bytes = rows * 8 if onehot else rows * vocab * 4
    return Case(
        name, f"metrics_{'onehot' if onehot else 'multihot'}", {"N": rows, "V": vocab, "labels": kind}, "fp32",
        make_inputs, fastmask_fn, T4REC, lambda t4rec, inputs: call(t4rec.metrics, inputs),
        rows * vocab * 4 + label_bytes, rows * len(TOP_KS) * 4 * 3,
    )


def _ranks_case(name: str, rows: int, vocab: int) -> Case:
    """Rank of each row's target: ``fastmask.ops.target_ranks`` vs T4Rec's top-k path (one-hot + topk)."""

    def make_inputs(device):
        gen = torch.Generator().manual_seed(3)
        targets = torch.randint(0, vocab, (rows,), generator=gen).to(device)
        return {"scores": make_scores(rows, vocab, device, 2), "targets": targets}

    def fastmask_fn(inputs):
        from .. import ops

        items = inputs["targets"][:, None].contiguous()
        return lambda: ops.target_ranks(inputs["scores"], items)

    def t4rec_fn(t4rec, inputs):
        ks = torch.LongTensor(TOP_KS)

        def run():
            labels = t4rec.utils.tranform_label_to_onehot(inputs["targets"], inputs["scores"].shape[1])
            return t4rec.utils.extract_topk(ks, inputs["scores"], labels)
        return run

    return Case(
        name, "ranks_onehot", {"N": rows, "V": vocab}, "fp32", make_inputs, fastmask_fn, T4REC, t4rec_fn,
        rows * vocab * 4 + rows * 8, rows * 8,
    )


# -- scores from hidden states --------------------------------------------------------------------
def _hidden_case(name: str, op: str, rows: int, dim: int, vocab: int, dtype: torch.dtype, baseline: bool) -> Case:
    """``ops.<op>_from_hidden`` on hidden states and an item table, against the materialised path:
    ``hidden @ item_weight.T`` ((N, V) scores), then ``ops.target_ranks`` or ``torch.topk``."""

    def make_inputs(device):
        gen = torch.Generator(device).manual_seed(5)
        return {
            "hidden": torch.randn(rows, dim, generator=gen, device=device).to(dtype),
            "item_weight": torch.randn(vocab, dim, generator=gen, device=device).to(dtype),
            "targets": torch.randint(0, vocab, (rows, 1), generator=gen, device=device),
        }

    def fastmask_fn(inputs):
        from .. import ops

        hidden, item_weight = inputs["hidden"], inputs["item_weight"]
        if op == "ranks":
            return lambda: ops.target_ranks_from_hidden(hidden, item_weight, inputs["targets"], None)
        return lambda: ops.topk_from_hidden(hidden, item_weight, HIDDEN_TOP_K, None)

    def materialised_fn(_, inputs):
        from .. import ops

        def scores():
            return (inputs["hidden"] @ inputs["item_weight"].T).float()
        if op == "ranks":
            return lambda: ops.target_ranks(scores(), inputs["targets"])
        return lambda: torch.topk(scores(), HIDDEN_TOP_K)

    written = rows * 8 if op == "ranks" else rows * HIDDEN_TOP_K * 12
    # The reference scores a few rows at a time in plain torch operations, one multiply-add per step.
    slow = rows * dim * vocab > REFERENCE_MAX_MULTIPLY_ADDS
    return Case(
        name, f"{op}_from_hidden", {"N": rows, "d": dim, "V": vocab}, _dtype_name(dtype), make_inputs, fastmask_fn,
        MATERIALISED if baseline else None, materialised_fn if baseline else None,
        (rows + vocab) * dim * _itemsize(dtype), written,
        reference_skip=f"not timed: the reference takes minutes beyond {REFERENCE_MAX_MULTIPLY_ADDS:.0e} multiply-adds"
        if slow else None,
    )


def _hidden_cases(shapes: Shapes, gpu: bool) -> list[Case]:
    (rows, dim, vocab), (big_rows, big_dim, big_vocab) = shapes.hidden
    dtypes = (torch.bfloat16, torch.float32) if gpu else (torch.float32,)
    cases = []
    for dtype in dtypes:
        suffix = f"_{_dtype_name(dtype)}" if gpu else ""
        cases += [_hidden_case(f"{op}_hidden{suffix}", op, rows, dim, vocab, dtype, baseline=True)
                  for op in ("ranks", "topk")]
    big = torch.bfloat16 if gpu else torch.float32  # the scores would need 164 GB (GPU) or 8 GB (CPU)
    cases += [_hidden_case(f"{op}_hidden_large", op, big_rows, big_dim, big_vocab, big, baseline=False)
              for op in ("ranks", "topk")]
    return cases


# -- sequence policies ---------------------------------------------------------------------------
def _bert4rec_case(name: str, batch: int, length: int) -> Case:
    """RecBole / hopwise BERT4Rec ``mask_itemseq`` (max_seq_length = L) vs RecBole's own transform."""
    mask_item_length = int(BERT4REC_MASK_RATIO * length)

    def fastmask_fn(inputs):
        from ..sequence import BERT4RecMasking

        # RecBole's transform reads no ft_ratio from this configuration: random masking only, as here.
        masking = BERT4RecMasking(N_ITEMS, BERT4REC_MASK_RATIO, length, ft_ratio=0.0)
        return lambda: masking(inputs["ids"])

    def recbole_fn(recbole, inputs):
        return recbole.mask_itemseq(inputs["ids"], N_ITEMS, BERT4REC_MASK_RATIO, length)

    return Case(
        name, "bert4rec_mask",
        {"B": batch, "L": length, "n_items": N_ITEMS, "mask_ratio": BERT4REC_MASK_RATIO, "ft_ratio": 0.0},
        "int64", lambda device: {"ids": make_item_ids(batch, length, device)}, fastmask_fn, RECBOLE, recbole_fn,
        batch * length * 8, (batch * length + 3 * batch * mask_item_length) * 8,
    )


def _merlin_case(name: str, batch: int, length: int) -> Case:
    """Merlin Models ``SequenceMaskRandom`` training targets; Merlin's own is TensorFlow: no baseline."""

    def fastmask_fn(inputs):
        from ..sequence import MerlinMaskRandom

        module = MerlinMaskRandom(hidden_size=HIDDEN_SIZE)
        return lambda: module.compute_masked_targets(inputs["ids"], training=True)

    return Case(
        name, "merlin_mask_random", {"B": batch, "L": length}, "int64",
        # Merlin Models rejects sequences of fewer than 2 items.
        lambda device: {"ids": make_item_ids(batch, length, device, min_length=2)}, fastmask_fn, None, None,
        batch * length * 8, batch * length * (1 + 8),
    )


def _sampler_case(name: str, max_n_samples: int, max_id: int, n_labels: int, fixed_size: bool) -> Case:
    """``LogUniformSampler.sample`` for a batch of labels vs T4Rec's (multinomial with replacement + unique)."""

    def make_inputs(device):
        gen = torch.Generator().manual_seed(6)
        return {"labels": torch.randint(0, max_id, (n_labels,), generator=gen).to(device)}

    def fastmask_fn(inputs):
        from ..sequence import LogUniformSampler

        labels = inputs["labels"]
        sampler = LogUniformSampler(max_n_samples, max_id, fixed_size=fixed_size).to(labels.device)
        return lambda: sampler.sample(labels)

    def t4rec_fn(t4rec, inputs):
        if t4rec.sampler is None:
            raise RuntimeError(f"T4Rec's LogUniformSampler was not loaded: {t4rec.sampler_note}")
        labels = inputs["labels"]
        sampler = t4rec.sampler(max_n_samples, max_id).to(labels.device)
        return lambda: sampler.sample(labels)

    # Reads the labels and one probability per label and per sample; writes samples (int64) and probabilities.
    return Case(
        name, "log_uniform_sample" + ("_fixed" if fixed_size else ""),
        {"labels": n_labels, "max_n_samples": max_n_samples, "max_id": max_id}, "int64",
        make_inputs, fastmask_fn, T4REC, t4rec_fn,
        n_labels * (8 + 4) + max_n_samples * 4, n_labels * 4 + max_n_samples * (8 + 4),
    )


def build_cases(device_type: str, quick: bool = False) -> list[Case]:
    """The default set, in the order they run (the goals' cases first on a GPU, whose run has a time
    budget). ``quick``: the same cases at tiny shapes (a smoke run, not a measurement)."""
    s = shapes(device_type, quick)
    gpu = device_type == "cuda"
    plm, mlm = "PermutationLanguageModeling", "MaskedLanguageModeling"
    cases = _call_cases(*s.call)
    if not gpu:  # on a GPU the per-call cases already have this shape
        cases += [
            _masking_case("plm_train_small", "plm_train", *s.masking_small, plm, True, floor=True),
            _masking_case("mlm_train_small", "mlm_train", *s.masking_small, mlm, True),
        ]
    cases += [
        _masking_case("plm_train_large", "plm_train", *s.masking_large, plm, True, floor=True),
        _masking_case("plm_eval_large", "plm_eval", *s.masking_large, plm, False, floor=True),
        _masking_case("mlm_train_large", "mlm_train", *s.masking_large, mlm, True),
        _gumbel_case("gumbel_fp32", *s.gumbel, torch.float32, bounds=gpu),
    ]
    if gpu:
        cases.append(_gumbel_case("gumbel_bf16", *s.gumbel, torch.bfloat16, bounds=True))
    cases += [
        _metrics_case("metrics_onehot", *s.metrics_onehot, onehot=True),
        _metrics_case("metrics_multihot", *s.metrics_multihot, onehot=False),
        _ranks_case("ranks_onehot", *s.ranks),
        _bert4rec_case("bert4rec_l200", *s.bert4rec[0]),
        _bert4rec_case("bert4rec_l50", *s.bert4rec[1]),
        _merlin_case("merlin_random", *s.merlin),
        _sampler_case("sampler", *s.sampler, fixed_size=False),
        _sampler_case("sampler_fixed", *s.sampler, fixed_size=True),
        *_hidden_cases(s, gpu),
    ]
    return cases


def select_cases(cases: list[Case], pattern: Optional[str]) -> list[Case]:
    """Cases whose name or op matches ``pattern`` (a glob such as ``plm_*``, or a substring)."""
    if not pattern:
        return cases

    def matches(text):
        return fnmatch.fnmatch(text, pattern) or pattern in text
    return [case for case in cases if matches(case.name) or matches(case.op)]
