"""Fakes of the compiled ``fastmask_C`` ops, so they trace under ``torch.compile`` and ``opcheck``.

Each ``fastmask_C::<op>`` has the signature and output metadata of ``fastmask::<op>``, so its fake
is that op called on the fake inputs (which runs ``fastmask::<op>``'s own fake).
"""
from __future__ import annotations

import torch

from . import ops  # noqa: F401  (defines the fastmask:: ops whose fakes are reused)

COMPILED_OPS = ("mlm_mask", "plm_train_masks", "plm_eval_perm_mask", "gumbel_argmax", "target_ranks")


def _fake_of(name: str):
    op = getattr(torch.ops.fastmask, name).default

    def fake(*args):
        return op(*args)

    fake.__name__ = f"{name}_fake"
    return fake


for _name in COMPILED_OPS:
    torch.library.register_fake(f"fastmask_C::{_name}")(_fake_of(_name))
