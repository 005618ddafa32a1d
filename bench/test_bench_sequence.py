"""Benchmarks of the sequence policies: RecBole BERT4Rec masking against its per-user loop, Merlin Models
masking (no baseline: Merlin's is TensorFlow) and the log-uniform sampler against T4Rec's."""
import pytest
import torch

from fastmask import sequence
from fastmask.bench import (
    BERT4REC_FT_RATIO, BERT4REC_MASK_RATIO, BERT4REC_SEED, N_ITEMS, PER_USER_LOOP, T4REC, make_item_ids,
)
from fastmask.reference.philox import bernoulli_threshold
from fastmask.reference.sequence import bert4rec_mask_loop


@pytest.mark.baseline(PER_USER_LOOP)
@pytest.mark.parametrize("shape_index", [0, 1], ids=["long", "wide"])
def test_bert4rec_mask(run_benchmark, output_bytes, contender, as_contender, device, sequence_shapes, shape_index):
    batch, length = sequence_shapes["bert4rec"][shape_index]
    ids = make_item_ids(batch, length, device)
    masking = sequence.BERT4RecMasking(N_ITEMS, BERT4REC_MASK_RATIO, length, BERT4REC_FT_RATIO)
    if contender == PER_USER_LOOP:
        threshold, width = bernoulli_threshold(BERT4REC_MASK_RATIO), masking.mask_item_length
        args = (ids, None, BERT4REC_SEED, N_ITEMS, threshold, width, bernoulli_threshold(BERT4REC_FT_RATIO))
        call = lambda: bert4rec_mask_loop(*args)  # noqa: E731
    else:
        call = lambda: masking(ids)  # noqa: E731
    with as_contender():
        run_benchmark(call, ids.nbytes + output_bytes(*call()), op="bert4rec_mask", contender=contender,
                      shape=[batch, length], n_items=N_ITEMS, mask_ratio=BERT4REC_MASK_RATIO,
                      ft_ratio=BERT4REC_FT_RATIO)


@pytest.mark.baseline(None)
def test_merlin_mask_random(run_benchmark, output_bytes, contender, as_contender, device, sequence_shapes):
    batch, length = sequence_shapes["merlin"]
    ids = make_item_ids(batch, length, device, min_length=2)  # Merlin Models needs 2 items or more
    module = sequence.MerlinMaskRandom(hidden_size=64)

    def call():
        return module.compute_masked_targets(ids, training=True)

    with as_contender():
        info = call()
        run_benchmark(call, ids.nbytes + output_bytes(info.schema, info.targets),
                      op="MerlinMaskRandom.compute_masked_targets",
                      contender=contender, shape=[batch, length])


@pytest.mark.parametrize("fixed_size", [False, True], ids=["unique", "fixed_size"])
def test_log_uniform_sample(run_benchmark, output_bytes, contender, as_contender, t4rec, device, sequence_shapes,
                            fixed_size):
    max_n_samples, max_id, n_labels = sequence_shapes["sampler"]
    labels = torch.randint(0, max_id, (n_labels,), generator=torch.Generator().manual_seed(6)).to(device)
    if contender == T4REC:
        sampler = t4rec.sampler(max_n_samples, max_id)
    else:
        sampler = sequence.LogUniformSampler(max_n_samples, max_id, fixed_size=fixed_size)
    sampler = sampler.to(device)
    with as_contender():
        run_benchmark(lambda: sampler.sample(labels), labels.nbytes + output_bytes(*sampler.sample(labels)),
                      op="LogUniformSampler.sample", contender=contender, fixed_size=fixed_size,
                      max_n_samples=max_n_samples, max_id=max_id, labels=n_labels)
