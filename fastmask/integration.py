"""Run an installed Transformers4Rec's masking, RTD sampling and ranking metrics on fastmask.

``patch_transformers4rec()`` sets fastmask's methods (the very functions of ``fastmask.masking`` and
``fastmask.ranking_metric``) on Transformers4Rec's own classes. Its classes, registries, class names,
``masking.__class__ in DEFAULT_MASKING`` and ``isinstance`` checks, and state_dict keys stay as they
are, so models built before or after patching, and their checkpoints, are interchangeable.

What changes while patched:

* MLM/RTD training masks, PLM training masks with ``perm_mask``/``target_mapping``, and the PLM
  last-item evaluation ``perm_mask`` come from fastmask's fused ops (the evaluation and inference
  targets are fastmask's rules, equal to Transformers4Rec's);
* RTD ``sample_from_softmax`` is the fused Gumbel-max and ``get_fake_tokens`` is fastmask's;
* ranking metrics are computed by fastmask (a subclass with its own ``_metric`` still runs it);
* the next-item task scores items from its hidden states and output layer (tied or not) without the
  (N, V) logits where Transformers4Rec's flow does not hand them to the caller: ``Model.evaluate``
  (metrics only: ``target_ranks_from_hidden``, and no loss, which evaluate discards) and inference
  with ``top_k`` (``topk_from_hidden``). Other calls still build the logits (see README).

torchmetrics binds a metric's ``update`` when the metric is built. Metrics built while patched, or
copied or unpickled then, run fastmask's ``update``: one-hot targets are ranked as item ids, one rank
pass per batch shared by the metrics updated on it. The next-item task's default metrics, which
Transformers4Rec builds when it is imported, are rebound by the patch (and restored after). Other
metrics built before patching keep Transformers4Rec's ``update``, which builds the dense one-hot
labels, and rank those with fastmask: the same results, more slowly.

Seeds are drawn from torch's generator, so ``torch.manual_seed`` reproduces a run; the masks follow
fastmask's reference rules (Transformers4Rec's rules on a counter-based random stream). Instances
also accept fastmask's options as attributes: ``generator``, ``check_inputs``, ``skip_empty_rows``.
CLM has no random step and is left untouched.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import types

import torch

from .hidden import HiddenScores
from . import hidden as from_hidden

_MISSING = object()
# (class, attribute) -> what the class itself held before patching (_MISSING if nothing).
_originals: dict = {}
# (metric, its update before patching) for the default metrics rebound by the patch. A list: a
# torchmetrics Metric hashes its state, so it cannot key a dict.
_rebound_metrics: list = []

# fastmask's masking methods, with the helpers and class flags they read, set on Transformers4Rec's
# class of the same name.
_MASKING_METHODS = {
    "MaskSequence": ("_seed", "_check_item_ids", "_keep"),
    "MaskedLanguageModeling": ("_needs_items_in_every_row", "compute_masked_targets", "_compute_masked_targets"),
    "PermutationLanguageModeling": (
        "_needs_items_in_every_row",
        "_span_table",
        "_context_lengths",
        "compute_masked_targets",
        "_compute_masked_targets_extended",
    ),
    "ReplacementLanguageModeling": ("get_fake_tokens", "sample_from_softmax"),
}
# fastmask's keyword-only masking options; their constructor defaults become class defaults.
_MASKING_OPTIONS = ("generator", "check_inputs", "skip_empty_rows")
_METRIC_CLASSES = ("PrecisionAt", "RecallAt", "AvgPrecisionAt", "DCGAt", "NDCGAt", "MeanReciprocalRankAt")
# Each metric class defines its own ``_metric``, so fastmask's shared one is set on every class.
_METRIC_METHODS = {"RankingMetric": ("full_state_update", "update", "update_from_hidden", "_update_from_hidden_scores",
                                      "_update_with_own_metric")} | {
    name: ("_metric", "_needs_ideal", "_needs_num_relevant", "_from_ranked") for name in _METRIC_CLASSES
}
# Methods that instances keep bound from construction on: torchmetrics binds ``update`` in
# ``Metric.__init__``, AvgPrecisionAt and NDCGAt keep an inner metric's ``_metric``.
_BOUND_AT_CONSTRUCTION = ("update", "_metric")


def _transformers4rec_modules():
    try:
        from transformers4rec.torch import masking, ranking_metric
    except ImportError as error:
        raise ImportError(
            "fastmask.patch_transformers4rec needs the 'transformers4rec' package "
            "(pip install transformers4rec); it could not be imported"
        ) from error
    return masking, ranking_metric


def _attribute(cls, name):
    """``cls.name`` as stored in the class (a plain function, not a bound method)."""
    try:
        return inspect.getattr_static(cls, name)
    except AttributeError:
        raise RuntimeError(f"fastmask: {cls.__module__}.{cls.__qualname__} has no attribute {name!r}") from None


def _t4rec_class(module, name):
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise RuntimeError(
            f"fastmask cannot patch this transformers4rec: {module.__name__}.{name} is missing "
            "(fastmask follows transformers4rec 23.12)"
        )
    return cls


def _while_patched(name, fastmask_method):
    """``fastmask_method`` while patched, the instance's class's own ``name`` once unpatched.

    For methods bound at construction: a metric built while patched and used after unpatching
    must run Transformers4Rec's method, not fastmask's (whose helpers are gone from the class).
    """

    @functools.wraps(fastmask_method)
    def method(self, *args, **kwargs):
        if _originals:
            return fastmask_method(self, *args, **kwargs)
        return getattr(type(self), name)(self, *args, **kwargs)

    return method


def _method_replacements(t4r_module, fastmask_module, methods, bound_at_construction=()):
    """(Transformers4Rec class, name, fastmask's attribute of that name) for every entry of ``methods``."""
    replacements = []
    for class_name, names in methods.items():
        target = _t4rec_class(t4r_module, class_name)
        source = getattr(fastmask_module, class_name)
        for name in names:
            value = _attribute(source, name)
            if name in bound_at_construction:
                value = _while_patched(name, value)
            replacements.append((target, name, value))
    return replacements


def _replacements():
    from . import masking, ranking_metric

    t4r_masking, t4r_ranking_metric = _transformers4rec_modules()
    options = inspect.signature(masking.MaskSequence.__init__).parameters
    mask_sequence = _t4rec_class(t4r_masking, "MaskSequence")
    return (
        [(mask_sequence, name, options[name].default) for name in _MASKING_OPTIONS]
        + _method_replacements(t4r_masking, masking, _MASKING_METHODS)
        + _method_replacements(t4r_ranking_metric, ranking_metric, _METRIC_METHODS, _BOUND_AT_CONSTRUCTION)
        + _next_item_replacements()
    )


# -- next-item scores from hidden states -----------------------------------------------------------
# Set by Model.evaluate while patched: the next-item tasks rank from hidden states.
_metrics_only = contextvars.ContextVar("fastmask_metrics_only", default=False)
# Set by the next-item task around Transformers4Rec's own forward: its output layer hands over
# HiddenScores instead of computing the logits.
_defer_logits = contextvars.ContextVar("fastmask_defer_logits", default=False)


@contextlib.contextmanager
def _set(variable: contextvars.ContextVar):
    token = variable.set(True)
    try:
        yield
    finally:
        variable.reset(token)


class _DeferredLogits(HiddenScores):
    """The next-item logits as the output layer's inputs and weights. Inside ``Model.evaluate`` the task's
    loss (``cross_entropy``) on them is not computed, since evaluate returns metrics only: NaN stands for it."""

    __slots__ = ()

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.cross_entropy:
            return torch.full((), float("nan"), device=args[0].hidden.device)
        return NotImplemented


def _runs_fastmask_update(metric) -> bool:
    """Whether ``metric.update`` (torchmetrics' wrapper of a bound method) runs fastmask's ranking update,
    which takes HiddenScores."""
    from . import ranking_metric

    bound = getattr(metric.update, "__wrapped__", metric.update)
    function = getattr(bound, "__func__", None)
    return getattr(function, "__wrapped__", function) is ranking_metric.RankingMetric.update


def _output_layer(task, layer_class):
    """The task's output layer (Transformers4Rec wraps it in a Block), if it is ``layer_class``'s, and its
    temperature allows ranking the undivided scores (none, or positive: a monotone division)."""
    layer = getattr(task.pre, "module", None)
    if not isinstance(layer, layer_class) or (layer.softmax_temperature or 0) < 0:
        return None
    return layer


def _next_item_replacements():
    from transformers4rec.torch.model import base, prediction_task

    model = _t4rec_class(base, "Model")
    task = _t4rec_class(prediction_task, "NextItemPredictionTask")
    layer_class = _t4rec_class(prediction_task, "_NextItemPredictionTask")
    evaluate = _attribute(model, "evaluate")
    task_forward = _attribute(task, "forward")
    layer_forward = _attribute(layer_class, "forward")

    @functools.wraps(evaluate)
    def model_evaluate(self, *args, **kwargs):
        with _set(_metrics_only):
            return evaluate(self, *args, **kwargs)

    @functools.wraps(task_forward)
    def next_item_forward(self, inputs, targets=None, training=False, testing=False, top_k=None, **kwargs):
        layer = None if training else _output_layer(self, layer_class)
        if testing:
            ranks_from_hidden = (_metrics_only.get() and type(self.loss) is torch.nn.CrossEntropyLoss
                                 and all(_runs_fastmask_update(metric) for metric in self.metrics))
        else:
            ranks_from_hidden = top_k is not None
        if layer is None or not ranks_from_hidden:
            return task_forward(self, inputs, targets=targets, training=training, testing=testing, top_k=top_k,
                                **kwargs)
        with _set(_defer_logits):
            output = task_forward(self, inputs, targets=targets, training=False, testing=testing, top_k=None, **kwargs)
        if testing:
            return output
        scores, ids = from_hidden.topk(output.hidden, output.item_weight, top_k)
        # As Transformers4Rec's logits: divided by the temperature, when there is one.
        return (torch.div(scores, layer.softmax_temperature) if layer.softmax_temperature else scores), ids

    @functools.wraps(layer_forward)
    def output_layer_forward(self, inputs, targets=None, training=False, testing=False, **kwargs):
        if training or not _defer_logits.get():
            return layer_forward(self, inputs, targets=targets, training=training, testing=testing, **kwargs)
        weight = self.item_embedding_table.weight if self.weight_tying else self.output_layer
        return _DeferredLogits(inputs, weight), targets

    return [(model, "evaluate", model_evaluate), (task, "forward", next_item_forward),
            (layer_class, "forward", output_layer_forward)]


def is_transformers4rec_patched() -> bool:
    """Whether ``patch_transformers4rec()`` is in effect."""
    return bool(_originals)


def patch_transformers4rec() -> None:
    """Make transformers4rec's masking, RTD sampling and ranking metrics run on fastmask.

    Idempotent. Raises ImportError when transformers4rec is not installed, RuntimeError when the
    installed version lacks a class or method fastmask replaces (nothing is changed then).
    """
    if _originals:
        return
    replacements = _replacements()  # all looked up before anything changes
    for cls, name, _ in replacements:
        _originals[(cls, name)] = cls.__dict__.get(name, _MISSING)
    for cls, name, value in replacements:
        setattr(cls, name, value)
    for metric in _default_metrics():
        _rebound_metrics.append((metric, metric.__dict__["update"]))
        # As torchmetrics does when it unpickles a metric: wrap the class's (now fastmask's) update.
        metric.update = metric._wrap_update(types.MethodType(type(metric).update, metric))


def _default_metrics() -> list:
    """The ranking metrics Transformers4Rec built at import as the next-item task's defaults."""
    try:
        from transformers4rec.torch.model.prediction_task import NextItemPredictionTask
        from transformers4rec.torch.ranking_metric import RankingMetric
    except ImportError:
        return []
    defaults = getattr(NextItemPredictionTask, "DEFAULT_METRICS", ())
    return [metric for metric in defaults if isinstance(metric, RankingMetric) and "update" in metric.__dict__]


def unpatch_transformers4rec() -> None:
    """Restore transformers4rec's own methods exactly (a no-op when not patched)."""
    for metric, update in _rebound_metrics:
        metric.update = update
    _rebound_metrics.clear()
    for (cls, name), original in _originals.items():
        if original is _MISSING:
            delattr(cls, name)
        else:
            setattr(cls, name, original)
    _originals.clear()


@contextlib.contextmanager
def patched_transformers4rec():
    """``with fastmask.patched_transformers4rec(): ...`` patches for the block only.

    A patch already in effect when the block starts stays in effect after it.
    """
    was_patched = is_transformers4rec_patched()
    patch_transformers4rec()
    try:
        yield
    finally:
        if not was_patched:
            unpatch_transformers4rec()

__all__ = [
    "patch_transformers4rec",
    "unpatch_transformers4rec",
    "patched_transformers4rec",
    "is_transformers4rec_patched",
]
