"""The ops each masking call dispatches are the ones README's "What a call launches" lists, no more:
on a GPU each is a kernel launch, so this guards the per-call cost without a GPU."""
import re
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastmask import masking

README = Path(__file__).resolve().parents[1] / "README.md"
MODES = {"training": dict(training=True), "evaluation": dict(testing=True), "inference": dict()}
TORCH_OPS = {"randint", "ne"}


class Dispatched(TorchDispatchMode):
    """The schema names of the ops run, views (no data written) left out."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops.append(func._schema.name)
        return func(*args, **(kwargs or {}))


def documented() -> dict:
    """(module, mode) -> op names, from README's table."""
    text = README.read_text()
    section = text[text.index("### What a call launches"):]
    rows = re.findall(r"^\| (CLM|MLM|PLM|RTD) \|(.*)\|$", section, flags=re.MULTILINE)
    table = {}
    for module, cells in rows:
        for mode, cell in zip(MODES, cells.split("|"), strict=True):
            names = re.findall(r"`(\w+)`", cell)
            table[module.lower(), mode] = [("aten::" if name in TORCH_OPS else "fastmask::") + name for name in names]
    assert len(table) == 12
    return table


@pytest.mark.parametrize("name", ["clm", "mlm", "plm", "rtd"])
@pytest.mark.parametrize("mode", MODES)
def test_a_masking_call_dispatches_what_readme_says(name, mode):
    ids = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0], [1, 0, 0, 0]])
    module = masking.masking_registry[name](8, check_inputs=False)
    with Dispatched() as dispatched:
        module.compute_masked_targets(ids, **MODES[mode])
    assert dispatched.ops == documented()[name, mode]


def test_rtd_sampling_dispatches_what_readme_says():
    logits = torch.randn(3, 10)
    module = masking.ReplacementLanguageModeling(8)
    with Dispatched() as dispatched:
        module.sample_from_softmax(logits)
    assert dispatched.ops == ["aten::randint", "fastmask::gumbel_argmax"]
    assert "`randint` and `gumbel_argmax`" in README.read_text()


def test_the_recorder_sees_a_torch_op_added_to_a_call(monkeypatch):
    original = masking.MaskedLanguageModeling._compute_masked_targets

    def with_an_extra_op(self, item_ids, training=False, testing=False):
        info = original(self, item_ids, training=training, testing=testing)
        return masking.MaskingInfo(info.schema, torch.where(info.schema, info.targets, self.padding_idx))

    monkeypatch.setattr(masking.MaskedLanguageModeling, "_compute_masked_targets", with_an_extra_op)
    ids = torch.tensor([[3, 4, 5, 0]])
    with Dispatched() as dispatched:
        masking.MaskedLanguageModeling(8, check_inputs=False).compute_masked_targets(ids, training=True)
    assert dispatched.ops != documented()["mlm", "training"]
