"""Every drop-in masking class, train and eval, per backend and against T4Rec, at the per-call and
the large shape of ``fastmask.bench.cases``."""
import pytest
import torch

from fastmask import masking
from fastmask.bench.cases import HIDDEN_SIZE, make_item_ids

CLASSES = [
    "CausalLanguageModeling",
    "MaskedLanguageModeling",
    "PermutationLanguageModeling",
    "ReplacementLanguageModeling",
]


def _module(library, klass):
    namespace = library.masking if library is not None else masking
    return getattr(namespace, klass)(hidden_size=HIDDEN_SIZE)


def _outputs(module):
    return [getattr(module, name, None) for name in ("mask_schema", "masked_targets", "perm_mask", "target_mapping")]


@pytest.mark.parametrize("size", ["call", "masking_large"])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("klass", CLASSES)
def test_compute_masked_targets(run_benchmark, output_bytes, contender, library, as_contender, device, shapes,
                                klass, mode, size):
    batch, length = getattr(shapes, size)
    ids = make_item_ids(batch, length, device)
    module = _module(library, klass)
    training = mode == "train"

    def call():
        return module.compute_masked_targets(ids, training=training, testing=not training)

    with as_contender():
        call()
        run_benchmark(
            call, ids.nbytes + output_bytes(*_outputs(module)),
            op=f"{klass}.compute_masked_targets", mode=mode, contender=contender, shape=[batch, length],
        )


def test_rtd_get_fake_tokens(run_benchmark, contender, library, as_contender, device, shapes):
    batch, length = shapes.masking_small
    vocab = shapes.gumbel[1]
    ids = make_item_ids(batch, length, device)
    targets = masking.MaskedLanguageModeling(hidden_size=HIDDEN_SIZE).compute_masked_targets(ids, training=True).targets
    target_flat = targets.flatten()
    num_targets = int((target_flat != 0).sum())
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(num_targets, vocab, generator=gen).to(device)
    module = _module(library, "ReplacementLanguageModeling")

    with as_contender():
        run_benchmark(
            lambda: module.get_fake_tokens(ids, target_flat, logits),
            logits.nbytes + ids.nbytes + target_flat.nbytes + ids.numel() * 9,
            op="ReplacementLanguageModeling.get_fake_tokens", contender=contender,
            shape=[batch, length, num_targets, vocab],
        )
