"""The op table: one schema per op, the same argument checks on every backend, dispatch and fallback,
tracing, and the layering of the package."""
import ast
import importlib
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastmask
from fastmask import _backend, _extension, ops
from fastmask.reference import sequence as ref_sequence
from fastmask.reference.masking import plm_context_lengths

from helpers import Backend, assert_same, run_op, seed_tensor

ROOT = Path(__file__).resolve().parents[1]
IDS = torch.tensor([[1, 2, 0], [3, 0, 0]])
SEED = torch.tensor([3])
ITEMS = torch.zeros(2, 1, dtype=torch.int64)
CONTEXT = [0, 6, 12]  # plm_context_lengths(1 / 3, 2)
H, W, T = torch.ones(2, 3), torch.ones(5, 3), torch.tensor([[0, 4], [1, -1]])


def samples(op: str) -> list[tuple]:
    """Argument tuples for ``op``: odd sizes, padding in several places, several dtypes."""
    generator = torch.Generator().manual_seed(3)
    seed = torch.tensor([2**40 + 3], dtype=torch.int64)
    ids = torch.randint(1, 50, (5, 7), generator=generator)
    ids[0, 4:] = 0
    ids[1, :2] = 0
    ids[2] = 0
    ids32 = ids.int()
    lengths = torch.tensor([4, 7, 0, 3, -1])  # RecBole's item_seq_len; -1 is out of range (masks nothing)
    table = ref_sequence.log_uniform_cdf_table(ref_sequence.log_uniform_distribution(30, 1))
    logits = torch.randn(3, 301, generator=generator)
    scores = torch.randint(0, 4, (4, 97), generator=generator).float()
    items = torch.tensor([[0, -1], [5, 96], [-1, -1], [3, 3]])
    hidden = torch.randn(5, 7, generator=generator)
    item_weight = torch.randn(41, 7, generator=generator)
    bias = torch.randn(41, generator=generator)
    targets = torch.tensor([[0, 40, -1], [3, 3, 41], [7, 8, 9], [-1, -1, -1], [40, 0, 1]])
    target_scores = torch.randn(5, 3, generator=generator)
    return {
        "mlm_train": [(ids, seed, 0, 2**30), (ids32, seed, 0, 2**32)],
        "plm_train": [(ids, seed, 0, 5, plm_context_lengths(1 / 6, 5), False),
                      (ids32, seed, 0, 2, plm_context_lengths(0.5, 2), True)],
        "plm_eval": [(ids, 0), (ids32, 3)],
        "next_item_targets": [(ids, 0), (ids32, 3)],
        "last_item_targets": [(ids, 0), (ids32, 3)],
        "clm_last_item_targets": [(ids, 0), (ids32, 3)],
        "mlm_inference_targets": [(ids, 0), (ids32, 3)],
        "gumbel_argmax": [(logits, seed), (logits.half(), seed), (logits.double(), seed)],
        "target_ranks": [(scores, items), (scores.bfloat16(), items[:, :1])],
        "merlin_mask_random": [(ids, seed, 0, 2**30, False), (ids32, seed, 0, 2**31, True)],
        "bert4rec_mask": [(ids, None, seed, 50, 2**31, 3, 0), (ids, lengths, seed, 50, 2**31, 3, 2**32),
                          (ids32, lengths, seed, 50, 2**30, 2, 2**31), (ids32, None, seed, 50, 2**30, 1, 2**32)],
        "log_uniform_draws": [(table, seed, 17)],
        "target_ranks_from_hidden": [(hidden, item_weight, targets, bias),
                                     (hidden.half(), item_weight.half(), targets[:, :1], None)],
        "topk_from_hidden": [(hidden, item_weight, 6, None),
                             (hidden.bfloat16(), item_weight.bfloat16(), 41, bias.bfloat16())],
        "gumbel_argmax_from_hidden": [(hidden, item_weight, bias, seed),
                                      (hidden.half(), item_weight.half(), None, seed)],
        "target_scores_from_hidden": [(hidden, item_weight, targets, bias)],
        "count_ahead_from_hidden": [(hidden, item_weight, None, target_scores, targets, 0),
                                    (hidden.bfloat16(), item_weight.bfloat16(), bias.bfloat16(), target_scores,
                                     targets, 40)],
    }[op]


def test_every_op_has_samples_and_a_docstring():
    for name, op in ops.TABLE.items():
        assert samples(name) and op.__doc__ and getattr(ops, name) is op, name
        assert op.overload is getattr(torch.ops.fastmask, name).default


@pytest.mark.parametrize("op", sorted(ops.TABLE))
def test_opcheck(op, any_backend):
    """Schema, fake, autograd registration and AOT dispatch of ``torch.ops.fastmask.<op>``, on each backend."""
    if any_backend.interpreted and op == "log_uniform_draws":
        pytest.skip("opcheck's many calls would take minutes under the interpreter")
    with fastmask.use_backend(any_backend.name):
        for args in samples(op):
            moved = [arg.to(any_backend.device) if isinstance(arg, torch.Tensor) else arg for arg in args]
            torch.library.opcheck(ops.TABLE[op].overload, moved)
    assert ops.last_backend(op) == any_backend.name


def _pybind_signature(function) -> tuple[list[str], int]:
    """(argument types, number of results) from a pybind11 function's signature line, with the type names
    of pybind11 2 and 3 made the same (``int``, ``list[int]``)."""
    signature = function.__doc__.splitlines()[0]
    signature = signature.replace("typing.SupportsInt | typing.SupportsIndex", "int")
    signature = signature.replace("collections.abc.Sequence[int]", "list[int]").replace("List[int]", "list[int]")
    signature = signature.replace("Optional[torch.Tensor]", "torch.Tensor | None")
    inside, result = signature[signature.index("(") + 1:].rsplit(") -> ", 1)
    arguments = [part.split(":", 1)[1].strip() for part in re.split(r",\s*(?=arg\d)", inside) if part]
    return arguments, result.count("torch.Tensor")


_SCHEMA_TYPES = {"Tensor": "torch.Tensor", "Optional[Tensor]": "torch.Tensor | None", "int": "int", "bool": "bool",
                 "List[int]": "list[int]"}


@pytest.mark.parametrize("submodule", ["cpu", "cuda"])
def test_compiled_kernels_take_the_schemas_arguments(submodule):
    """The extension has no schemas of its own: each kernel is checked against the op table's."""
    extension = _extension.load()
    functions = getattr(extension, submodule, None) if extension is not None else None
    if functions is None:
        pytest.skip(f"fastmask._C.{submodule} is not built here")
    names = {name for name in dir(functions) if not name.startswith("_")}
    assert names <= set(ops.TABLE)
    if submodule == "cpu":
        assert names == set(ops.TABLE)  # the C++ backend covers every op
    for name in names:
        schema = ops.TABLE[name].overload._schema
        expected = [_SCHEMA_TYPES[str(argument.type)] for argument in schema.arguments], len(schema.returns)
        assert _pybind_signature(getattr(functions, name)) == expected, name


def test_triton_launchers_are_named_like_the_ops():
    functions = _backend.triton_kernels()
    if functions is None:
        pytest.skip("the Triton backend is not available here")
    assert set(functions.__all__) <= set(ops.TABLE)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: ops.mlm_train(IDS[0], SEED, 0, 5), ValueError, "item_ids must be 2-D"),
        (lambda: ops.mlm_train(IDS.float(), SEED, 0, 5), TypeError, "item_ids must be an integer"),
        (lambda: ops.mlm_train(IDS.bool(), SEED, 0, 5), TypeError, "item_ids must be an integer"),
        (lambda: ops.mlm_train(IDS.to(torch.uint16), SEED, 0, 5), TypeError, "item_ids must be an integer"),
        (lambda: ops.mlm_train(IDS.tolist(), SEED, 0, 5), TypeError, "item_ids must be an integer"),
        (lambda: ops.mlm_train(IDS.int(), SEED, 2**40, 5), ValueError, "padding_idx"),
        (lambda: ops.mlm_train(IDS, SEED, 0.0, 5), TypeError, "padding_idx must be an int"),
        (lambda: ops.mlm_train(IDS.to(torch.uint8), SEED, 300, 5), ValueError, "padding_idx=300 does not fit"),
        (lambda: ops.mlm_train(IDS.to(torch.int8), SEED, -129, 5), ValueError, "padding_idx=-129 does not fit"),
        (lambda: ops.mlm_train(IDS, SEED.int(), 0, 5), TypeError, "seed must be an int64"),
        (lambda: ops.mlm_train(IDS, 1, 0, 5), TypeError, "seed must be an int64"),
        (lambda: ops.mlm_train(IDS, torch.tensor([1, 2]), 0, 5), ValueError, "seed must hold exactly one"),
        (lambda: ops.mlm_train(IDS, torch.empty(1, dtype=torch.long, device="meta"), 0, 5), ValueError,
         "seed must be on cpu like the data, got meta"),
        (lambda: ops.mlm_train(IDS, SEED, 0, -1), ValueError, "threshold"),
        (lambda: ops.mlm_train(IDS, SEED, 0, 2**32 + 1), ValueError, "threshold"),
        (lambda: ops.plm_train(IDS, SEED, 0, 2, [0, 6], False), ValueError, "context_lengths must have"),
        (lambda: ops.plm_train(IDS, SEED, 0, 0, [0], False), ValueError, "max_span_length"),
        (lambda: ops.plm_train(IDS, SEED, 0, 0, [0], True), ValueError, "max_span_length"),
        (lambda: ops.plm_train(IDS, SEED, 0, 2, [0, 0, 12], True), ValueError, r"context_lengths\[1\] must be"),
        (lambda: ops.plm_train(IDS, SEED, 0, 2, [0, 6, 1], False), ValueError, r"context_lengths\[2\]"),
        (lambda: ops.plm_train(IDS, SEED, 0, 2, [0, 6, 2**31], False), ValueError, r"context_lengths\[2\]"),
        (lambda: ops.plm_train(IDS, SEED, 0, 2, CONTEXT, 1), TypeError, "permute_all must be a bool"),
        (lambda: ops.plm_train(IDS.double(), SEED, 0, 2, CONTEXT, False), TypeError, "item_ids"),
        (lambda: ops.plm_eval(IDS[None], 0), ValueError, "item_ids must be 2-D"),
        (lambda: ops.next_item_targets(IDS.float(), 0), TypeError, "item_ids must be an integer"),
        (lambda: ops.mlm_inference_targets(IDS.to(torch.uint8), -1), ValueError, "padding_idx=-1 does not fit"),
        (lambda: ops.gumbel_argmax(torch.ones(2, 3, dtype=torch.int64), SEED), TypeError, "logits must be float"),
        (lambda: ops.gumbel_argmax(torch.ones(2, 3, dtype=torch.bool), SEED), TypeError, "logits must be float"),
        (lambda: ops.gumbel_argmax(torch.ones(3), SEED), ValueError, "logits must be 2-D"),
        (lambda: ops.gumbel_argmax(torch.ones(2, 3).to(torch.float8_e5m2), SEED), TypeError, "logits must be float32"),
        (lambda: ops.gumbel_argmax(torch.ones(2, 0), SEED), ValueError, "logits must have 1 to 2"),
        (lambda: ops.gumbel_argmax(torch.ones(2, 3), torch.tensor([1.0])), TypeError, "seed must be an int64"),
        (lambda: ops.target_ranks(torch.ones(2, 3, dtype=torch.int32), ITEMS), TypeError, "scores must be float"),
        (lambda: ops.target_ranks(torch.ones(3), ITEMS[:1]), ValueError, "scores must be 2-D"),
        (lambda: ops.target_ranks(torch.ones(2, 3), ITEMS.int()), TypeError, "items must be an int64"),
        (lambda: ops.target_ranks(torch.ones(2, 3), torch.zeros(3, 1, dtype=torch.int64)), ValueError,
         "one row per scores"),
        (lambda: ops.target_ranks(torch.ones(2, 3), ITEMS[:, 0]), ValueError, "one row per scores"),
        (lambda: ops.merlin_mask_random(IDS, torch.tensor([1.0]), 0, 5, False), TypeError, "seed must be an int64"),
        (lambda: ops.merlin_mask_random(IDS, SEED, 0, 2**32 + 1, False), ValueError, "threshold"),
        (lambda: ops.merlin_mask_random(IDS, SEED, 0, 5, 1), TypeError, "reset_any_full_row must be a bool"),
        (lambda: ops.bert4rec_mask(IDS, None, SEED, 1, 5, 2, 0), ValueError, "n_items"),
        (lambda: ops.bert4rec_mask(IDS, None, SEED, 5, 5, 0, 0), ValueError, "mask_item_length"),
        (lambda: ops.bert4rec_mask(IDS.float(), None, SEED, 5, 5, 2, 0), TypeError,
         "item_seq must be an integer tensor"),
        (lambda: ops.bert4rec_mask(IDS, None, SEED, 5, 5, 2, -1), ValueError, "ft_threshold"),
        (lambda: ops.bert4rec_mask(IDS, None, SEED, 5, 5, 2, 2**32 + 1), ValueError, "ft_threshold"),
        (lambda: ops.bert4rec_mask(IDS, None, SEED, 5, 5, 2, 0.5), TypeError, "ft_threshold"),
        (lambda: ops.bert4rec_mask(IDS, torch.tensor([1, 2]).int(), SEED, 5, 5, 2, 0), TypeError,
         "item_seq_len must be an int64 tensor"),
        (lambda: ops.bert4rec_mask(IDS, [1, 2], SEED, 5, 5, 2, 0), TypeError, "item_seq_len must be an int64 tensor"),
        (lambda: ops.bert4rec_mask(IDS, torch.tensor([1, 2, 3]), SEED, 5, 5, 2, 0), ValueError,
         r"item_seq_len must have shape \(2,\)"),
        (lambda: ops.bert4rec_mask(IDS, torch.tensor([[1, 2]]), SEED, 5, 5, 2, 0), ValueError,
         r"item_seq_len must have shape \(2,\)"),
        (lambda: ops.bert4rec_mask(IDS, torch.empty(2, dtype=torch.long, device="meta"), SEED, 5, 5, 2, 0), ValueError,
         "item_seq_len must be on cpu like item_seq"),
        (lambda: ops.log_uniform_draws(torch.zeros(3), SEED, 5), TypeError, "cdf_table"),
        (lambda: ops.log_uniform_draws(torch.zeros(3, dtype=torch.long), SEED, -1), ValueError, "num_draws"),
        (lambda: ops.log_uniform_draws(torch.zeros(3, dtype=torch.long), torch.zeros(2, dtype=torch.long), 3),
         ValueError, "seed must hold exactly one value"),
        (lambda: ops.target_ranks_from_hidden(H.double(), W.double(), T, None), TypeError, "hidden must be float32"),
        (lambda: ops.target_ranks_from_hidden(H[0], W, T, None), ValueError, "hidden must be 2-D"),
        (lambda: ops.target_ranks_from_hidden(H, W.half(), T, None), TypeError, "item_weight must have hidden's dtype"),
        (lambda: ops.target_ranks_from_hidden(H, W[:, :2], T, None), ValueError, "item_weight must be 2-D .* d = 3"),
        (lambda: ops.target_ranks_from_hidden(H, W, T.int(), None), TypeError, "targets must be an int64"),
        (lambda: ops.target_ranks_from_hidden(H, W, T[:1], None), ValueError, "targets must be 2-D with one row per"),
        (lambda: ops.target_ranks_from_hidden(H, W, T, W[:, 0].half()), TypeError, "bias must be None or have"),
        (lambda: ops.target_ranks_from_hidden(H, W, T, W[:4, 0]), ValueError, r"bias must have shape \(5,\)"),
        (lambda: ops.target_ranks_from_hidden(H, W, T, 1.0), TypeError, "bias must be None or have"),
        (lambda: ops.topk_from_hidden(H, W, 6, None), ValueError, r"k \(at most the 5 items\) must be in \[0, 5\]"),
        (lambda: ops.topk_from_hidden(H, W, -1, None), ValueError, "must be in"),
        (lambda: ops.topk_from_hidden(H, W, 2.0, None), TypeError, "must be an int"),
        (lambda: ops.gumbel_argmax_from_hidden(H, W[:0], None, SEED), ValueError, "at least one item"),
        (lambda: ops.gumbel_argmax_from_hidden(H, W, None, 3), TypeError, "seed must be an int64"),
        (lambda: ops.target_scores_from_hidden(H, W, T.float(), None), TypeError, "items must be an int64"),
        (lambda: ops.count_ahead_from_hidden(H, W, None, T, T, 0), TypeError, "scores must be a float32"),
        (lambda: ops.count_ahead_from_hidden(H, W, None, T[:, :1].float(), T, 0), ValueError,
         "scores must have the shape"),
        (lambda: ops.count_ahead_from_hidden(H, W, None, T.float(), T, -1), ValueError, "first_item"),
    ],
)
def test_bad_arguments_raise_the_same_error_on_every_backend(any_backend, call, error, match):
    if any_backend.device != "cpu":
        pytest.skip("the arguments are CPU tensors")
    with fastmask.use_backend(any_backend.name), pytest.raises(error, match=match):
        call()


def test_a_seed_on_another_device_is_refused():
    meta_seed = torch.tensor([1], device="meta")
    with pytest.raises(ValueError, match="seed must be on cpu like the data, got meta"):
        ops.mlm_train(IDS, meta_seed, 0, 5)


def test_ops_trace_under_compile():
    ids = torch.tensor([[3, 4, 0], [5, 0, 0]])
    seed = torch.tensor([11])

    @torch.compile(fullgraph=True, backend="eager")
    def step(ids, seed):
        schema, targets = ops.mlm_train(ids, seed, 0, 2**31)
        return schema, targets, ops.plm_eval(ids, 0), ops.last_item_targets(ids, 0)

    assert_same(step(ids, seed), (*ops.mlm_train(ids, seed, 0, 2**31), ops.plm_eval(ids, 0),
                                  ops.last_item_targets(ids, 0)))


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append(str(func))
        return func(*args, **(kwargs or {}))


def test_dispatch_modes_see_the_op():
    with _Recorder() as recorder:
        schema, targets = ops.mlm_train(IDS, SEED, 0, 2**31)
    assert recorder.calls == ["fastmask.mlm_train.default"]
    assert_same((schema, targets), ops.mlm_train(IDS, SEED, 0, 2**31))


def test_a_backend_lacking_an_op_falls_back_visibly(monkeypatch):
    class OnlyRanks:
        target_ranks = staticmethod(ops.TABLE["target_ranks"].reference)

    monkeypatch.setattr(_backend, "functions", lambda backend, device_type: OnlyRanks if backend == "cpp" else None)
    for op in ops.TABLE.values():
        monkeypatch.setattr(op, "_kernels", {})
    with pytest.warns(UserWarning, match="the cpp backend has no kernel for last_item_targets; it runs on reference"):
        ops.last_item_targets(IDS, 0)
    assert ops.last_backend("last_item_targets") == "reference"
    ops.target_ranks(torch.ones(2, 3), torch.zeros(2, 1, dtype=torch.int64))
    assert ops.last_backend("target_ranks") == "cpp"
    monkeypatch.setattr(_backend, "_forced", _backend.contextvars.ContextVar("forced", default="cpp"))
    with pytest.warns(UserWarning, match="the cpp backend has no kernel for plm_eval; it runs on reference"):
        ops.plm_eval(IDS, 0)


def test_a_forced_backend_refuses_tensors_it_cannot_run():
    if "cpp" not in fastmask.backends():
        pytest.skip("the C++ backend is not built")
    with fastmask.use_backend("cpp"), pytest.raises(ValueError, match="'cpp' runs CPU tensors; got a tensor on meta"):
        ops.mlm_train.kernel("meta")
    with pytest.raises(ValueError, match="unknown fastmask backend 'nope'"):
        with fastmask.use_backend("nope"):
            pass


def _run_python(script: str, **environment) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items()
           if key not in ("FASTMASK_BACKEND", "FASTMASK_SKIP_EXTENSION")}
    env.update(environment)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


def test_backend_from_the_environment():
    script = ("import torch, fastmask; from fastmask import ops\n"
              "ops.mlm_train(torch.tensor([[1, 2, 0]]), torch.tensor([1]), 0, 2**31)\n"
              "print(ops.last_backend('mlm_train'))")
    assert _run_python(script, FASTMASK_BACKEND="reference").stdout.split() == ["reference"]
    if "cuda" not in fastmask.backends():
        env = {key: value for key, value in os.environ.items() if key != "FASTMASK_SKIP_EXTENSION"}
        env["FASTMASK_BACKEND"] = "cuda"
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
        assert result.returncode != 0 and "fastmask backend 'cuda' is not available here" in result.stderr


def test_skipping_the_extension_leaves_the_reference_backend():
    script = ("import torch, fastmask; from fastmask import ops\n"
              "ops.mlm_train(torch.tensor([[1, 2, 0]]), torch.tensor([1]), 0, 2**31)\n"
              "print(fastmask.backends(), ops.last_backend('mlm_train'))")
    result = _run_python(script, FASTMASK_SKIP_EXTENSION="1", TRITON_INTERPRET="0")
    assert result.stdout.split() == ["['reference']", "reference"]
    assert "BackendMissingWarning" not in result.stderr  # switched off on purpose: no warning (tests/test_extension.py)


# -- layering --------------------------------------------------------------------------------------
# Each module of the package and what it may import from the package: nothing reaches back up.
FLOORS = [
    ("API", {"fastmask.masking", "fastmask.ranking_metric", "fastmask.sequence", "fastmask.integration",
             "fastmask.hidden", "fastmask.registry", "fastmask._checks", "fastmask.__main__", "fastmask"}),
    ("op table", {"fastmask.ops", "fastmask._backend", "fastmask._extension"}),
    ("backends", {"fastmask.reference", "fastmask.triton_kernels"}),
]


def _floor(module: str) -> int:
    """The floor of the longest member that is ``module`` or a package holding it."""
    matches = [(len(member), index) for index, (_, members) in enumerate(FLOORS) for member in members
               if module == member or (member != "fastmask" and module.startswith(member + "."))]
    assert matches, f"{module} belongs to no floor"
    return max(matches)[1]


def _package_imports(path: Path, module: str) -> set[str]:
    """The fastmask modules ``path`` imports at module level or inside functions."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.rsplit(".", node.level if path.name != "__init__.py" else node.level - 1)[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.startswith("fastmask"):
                submodules = {f"{target}.{alias.name}" for alias in node.names
                              if (ROOT / (target.replace(".", "/") + f"/{alias.name}.py")).exists()}
                # ``from . import x`` imports the submodule x, not its package (already importing).
                found.update(submodules if node.module is None and submodules else {target} | submodules)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("fastmask"))
    return found


def _modules():
    for path in sorted((ROOT / "fastmask").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if "bench" in parts:
            continue  # the benchmark is a client of the package, outside the floors
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path
    for path in sorted((ROOT / "triton_kernels").glob("*.py")):
        name = "fastmask.triton_kernels" + ("" if path.stem == "__init__" else f".{path.stem}")
        yield name, path


def test_no_module_imports_from_a_higher_floor():
    for module, path in _modules():
        for imported in _package_imports(path, module):
            assert _floor(imported) >= _floor(module), f"{module} imports {imported}"


def test_the_backends_do_not_import_each_other():
    for module, path in _modules():
        if module.startswith("fastmask.triton_kernels"):
            assert all(not i.startswith("fastmask.") or i.startswith(("fastmask.triton_kernels", "fastmask.reference"))
                       for i in _package_imports(path, module)), module
        if module.startswith("fastmask.reference"):
            assert all(i.startswith("fastmask.reference") for i in _package_imports(path, module)), module


def test_no_import_cycle_between_modules():
    graph = {module: {i for i in _package_imports(path, module)} for module, path in _modules()}
    visiting, done = set(), set()

    def visit(module, trail):
        if module in done or module not in graph:
            return
        assert module not in visiting, " -> ".join(trail + [module])
        visiting.add(module)
        for imported in graph[module]:
            if imported != module and not module.startswith(imported + "."):
                visit(imported, trail + [module])
        visiting.discard(module)
        done.add(module)

    for module in graph:
        visit(module, [])


def test_a_kernel_backend_named_like_an_op_runs_it(backend: Backend):
    ids = torch.tensor([[4, 5, 0]])
    assert_same(run_op(backend, "next_item_targets", ids, 0)[1].cpu(), torch.tensor([[5, 0, 0]]))
    run_op(backend, "mlm_train", ids, seed_tensor(1, backend.device), 0, 2**31)


PUBLIC_MODULES = ["fastmask", "fastmask.masking", "fastmask.ranking_metric", "fastmask.sequence", "fastmask.ops",
                  "fastmask.registry", "fastmask.integration", "fastmask.reference"]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_modules_state_their_api(name):
    """``__all__`` lists what the module defines for its users, not what it imports."""
    module = importlib.import_module(name)
    assert module.__all__ and len(set(module.__all__)) == len(module.__all__)
    for public in module.__all__:
        value = getattr(module, public)
        defined_here = getattr(value, "__module__", name) or name
        assert isinstance(value, types.ModuleType) or defined_here.startswith("fastmask"), (name, public)
    imported = {"torch", "np", "nn", "Optional", "Tensor", "dataclass", "Any", "Dict", "Tuple", "operator"}
    assert not imported & set(module.__all__)
