"""Train and evaluate a Transformers4Rec XLNet model whose masking and metrics run on fastmask.

Needs ``transformers4rec`` (pip install transformers4rec). Run::

    python examples/t4rec_patch.py [clm|mlm|plm|rtd]

The model, its classes and its checkpoints are Transformers4Rec's own; only the masking, sampling
and metric computations run on fastmask's kernels while patched.
"""
import json
import sys

import torch
import transformers4rec.torch as tr
from merlin_standard_lib import Schema

import fastmask

ITEM_COLUMN = "item_id/list"


def tiny_schema(num_items: int, max_sequence_length: int) -> Schema:
    """A schema with one item-id sequence column (ids 1..num_items, 0 is padding)."""
    item_column = {
        "name": ITEM_COLUMN,
        "valueCount": {"min": "1", "max": str(max_sequence_length)},
        "type": "INT",
        "intDomain": {"name": ITEM_COLUMN, "min": "1", "max": str(num_items), "isCategorical": True},
        "annotation": {"tag": ["item_id", "list", "categorical", "item"]},
    }
    return Schema().from_json(json.dumps({"feature": [item_column]}))


def synthetic_batch(num_items: int, lengths, max_sequence_length: int) -> dict:
    """Right-padded random sessions, one per entry of ``lengths``."""
    item_ids = torch.randint(1, num_items + 1, (len(lengths), max_sequence_length))
    positions = torch.arange(max_sequence_length)
    item_ids[positions[None, :] >= torch.tensor(lengths)[:, None]] = 0
    return {ITEM_COLUMN: item_ids}


def build_model(schema: Schema, masking: str, max_sequence_length: int, d_model: int = 16, weight_tying: bool = True):
    """XLNet next-item model; ``masking`` is a name of transformers4rec's masking registry."""
    inputs = tr.TabularSequenceFeatures.from_schema(
        schema,
        max_sequence_length=max_sequence_length,
        embedding_dim_default=d_model,
        d_output=d_model,
        masking=masking,
    )
    transformer = tr.XLNetConfig.build(
        d_model=d_model, n_head=2, n_layer=1, total_seq_length=max_sequence_length
    )
    return transformer.to_torch_model(inputs, tr.NextItemPredictionTask(weight_tying=weight_tying))


def main(masking: str = "plm") -> dict:
    num_items, max_sequence_length = 50, 12
    torch.manual_seed(0)
    with fastmask.patched_transformers4rec():
        model = build_model(tiny_schema(num_items, max_sequence_length), masking, max_sequence_length)
        batch = synthetic_batch(num_items, [12, 9, 5, 3, 2, 7], max_sequence_length)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        model.train()
        loss = model(batch, training=True)["loss"]
        loss.backward()
        optimizer.step()

        model.eval()
        with torch.no_grad():
            metrics = model.evaluate([(batch, None)], verbose=False)
    print(f"{masking}: training loss {loss.item():.4f}")
    for name, value in sorted(metrics.items()):
        print(f"  {name} = {float(value):.4f}")
    return {"loss": loss.item(), **{name: float(value) for name, value in metrics.items()}}


if __name__ == "__main__":
    main(*sys.argv[1:])
