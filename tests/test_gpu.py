"""GPU-only behaviour of the CUDA and Triton backends: full shapes, torch.compile, no host
synchronisation, CUDA-graph replays. Skipped without a GPU (CI has none; `.ci/gpu` runs them)."""
import pytest
import torch

import fastmask
from fastmask import masking, ops
from fastmask.reference import masking as ref_masking
from fastmask.reference import philox, ranking, sampling

from conftest import KERNEL_BACKENDS
from helpers import assert_same, on_cpu, seed_tensor

GPU_BACKENDS = [backend for backend in KERNEL_BACKENDS if backend.device == "cuda"]
pytestmark = pytest.mark.skipif(not GPU_BACKENDS, reason="needs a CUDA GPU")


@pytest.fixture(params=GPU_BACKENDS or [None], ids=str)
def gpu_backend(request):
    return request.param


def full_ids(batch: int, length: int, seed: int) -> torch.Tensor:
    """Right padding, left padding and holes, ids in [1, 50000)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50_000, (batch, length), generator=gen)
    lengths = torch.randint(0, length + 1, (batch,), generator=gen)
    ids[torch.arange(length)[None, :] >= lengths[:, None]] = 0
    ids[: batch // 8, : length // 4] = 0
    ids[batch // 8 : batch // 4, 1::5] = 0
    return ids


def test_full_shape_masking(gpu_backend):
    ids = full_ids(512, 200, seed=1)
    context = ref_masking.plm_context_lengths(1 / 6, 5)
    with fastmask.use_backend(gpu_backend.name):
        cuda_ids, seed = ids.cuda(), seed_tensor(31337, "cuda")
        got = {
            "mlm_train": ops.mlm_train(cuda_ids, seed, 0, philox.bernoulli_threshold(0.15)),
            "plm_train": ops.plm_train(cuda_ids, seed, 0, 5, context, False),
            "plm_train_all": ops.plm_train(cuda_ids, seed, 0, 5, context, True),
            "plm_eval": ops.plm_eval(cuda_ids, 0),
            "last_item_targets": ops.last_item_targets(cuda_ids, 0),
        }
    assert_same(on_cpu(got["mlm_train"]), ref_masking.mlm_train(ids, 31337, 0, philox.bernoulli_threshold(0.15)))
    assert_same(on_cpu(got["plm_train"]), ref_masking.plm_train(ids, 31337, 0, 5, context, False))
    assert_same(on_cpu(got["plm_train_all"]), ref_masking.plm_train(ids, 31337, 0, 5, context, True))
    assert_same(on_cpu(got["plm_eval"]), ref_masking.plm_eval(ids, 0))
    assert_same(on_cpu(got["last_item_targets"]), ref_masking.last_item_targets(ids, 0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_full_shape_gumbel_argmax(gpu_backend, dtype):
    gen = torch.Generator(device="cuda").manual_seed(0)
    logits = (torch.randn(4096, 100_000, device="cuda", generator=gen) * 4).to(dtype)
    logits[1, 99_999] = float("nan")
    with fastmask.use_backend(gpu_backend.name):
        got = ops.gumbel_argmax(logits, seed_tensor(7, "cuda")).cpu()
        few = ops.gumbel_argmax(logits[:3], seed_tensor(7, "cuda")).cpu()  # few rows: the vocabulary is split
    checked = 128  # the reference's float64 noise comes from numpy: a prefix of the rows
    assert_same(got[:checked], sampling.gumbel_argmax(logits[:checked].cpu(), 7))
    assert_same(few, sampling.gumbel_argmax(logits[:3].cpu(), 7))


def test_full_shape_target_ranks(gpu_backend):
    gen = torch.Generator(device="cuda").manual_seed(0)
    scores = torch.randint(-2000, 2000, (4096, 1_000_000), device="cuda", generator=gen, dtype=torch.int16)
    scores = scores.float().div_(16)  # many ties
    scores[0, ::1000] = float("nan")
    items = torch.randint(-1, 1_000_000, (4096, 3), device="cuda", generator=gen)
    with fastmask.use_backend(gpu_backend.name):
        got = ops.target_ranks(scores, items)
        few = ops.target_ranks(scores[:16].bfloat16(), items[:16])  # few rows: counts of splits added
    for first in range(0, 4096, 256):  # the sorting reference needs ~20 bytes per score
        rows = slice(first, first + 256)
        assert_same(got[rows], ranking.target_ranks(scores[rows], items[rows]))
    assert_same(few, ranking.target_ranks(scores[:16].bfloat16(), items[:16]))


def test_ops_under_torch_compile_fullgraph(gpu_backend):
    ids = full_ids(64, 50, seed=2).cuda()
    context = ref_masking.plm_context_lengths(1 / 6, 5)
    logits = torch.randn(64, 5000, device="cuda")
    items = torch.randint(-1, 5000, (64, 2), device="cuda")

    def step(seed):
        return (ops.mlm_train(ids, seed, 0, philox.bernoulli_threshold(0.15)),
                ops.plm_train(ids, seed, 0, 5, context, False), ops.plm_eval(ids, 0),
                ops.gumbel_argmax(logits, seed), ops.target_ranks(logits, items))

    with fastmask.use_backend(gpu_backend.name):
        seed = seed_tensor(11, "cuda")
        assert_same(torch.compile(step, fullgraph=True)(seed), step(seed))


@pytest.mark.parametrize("training", [True, False])
def test_masking_modules_do_not_synchronise(gpu_backend, training):
    ids = full_ids(64, 30, seed=4).cuda()
    modules = [cls(hidden_size=8).cuda() for cls in masking.masking_registry.values() if isinstance(cls, type)]
    logits = torch.randn(64, 1000, device="cuda")

    def step():
        for module in modules:
            module.compute_masked_targets(ids, training=training, testing=not training)
        modules[-1].sample_from_softmax(logits)

    with fastmask.use_backend(gpu_backend.name):
        step()  # warm-up: compiles the kernels and copies the constant tables to the device
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_cuda_graph_replays_draw_fresh_masks(gpu_backend):
    ids = full_ids(128, 40, seed=3).cuda()
    context = ref_masking.plm_context_lengths(1 / 6, 5)
    mlm = masking.MaskedLanguageModeling(8).cuda()
    plm = masking.PermutationLanguageModeling(8).cuda()

    def step():
        generator_state = torch.cuda.get_rng_state()
        mlm_info = mlm.compute_masked_targets(ids, training=True)
        plm.compute_masked_targets(ids, training=True)
        return generator_state, mlm_info.schema, plm.perm_mask

    with fastmask.use_backend(gpu_backend.name):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()  # warm-up outside the capture
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            _, schema, perm = step()
    replays = []
    for _ in range(2):
        graph.replay()
        torch.cuda.synchronize()
        replays.append((schema.clone(), perm.clone()))
    assert not torch.equal(replays[0][0], replays[1][0]) and not torch.equal(replays[0][1], replays[1][1])
    # The seed is read on the device: a graph of the op alone follows a seed tensor rewritten between replays.
    seed = seed_tensor(0, "cuda")
    with fastmask.use_backend(gpu_backend.name):
        ops.plm_train(ids, seed, 0, 5, context, False)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = ops.plm_train(ids, seed, 0, 5, context, False)
    for key in (5, 2**63 + 1):
        seed.copy_(seed_tensor(key, "cuda"))
        graph.replay()
        torch.cuda.synchronize()
        assert_same(on_cpu(outputs), ref_masking.plm_train(ids.cpu(), key, 0, 5, context, False))
