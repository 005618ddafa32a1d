"""fastmask's Philox draw layout in Triton (``fastmask.reference.philox`` is the definition).

Draw ``element`` of ``stream`` for ``row`` is word ``element & 3`` of
``tl.philox(seed, element >> 2, row, stream, 0)`` with 32-bit counters, so the four words of one
Philox call serve four consecutive elements.
"""
import triton
import triton.language as tl

from fastmask.reference import philox as reference

# Stream tags as constexprs, the only globals a @triton.jit function may read.
STREAM_MLM_BERNOULLI = tl.constexpr(reference.STREAM_MLM_BERNOULLI)
STREAM_MLM_FORCE = tl.constexpr(reference.STREAM_MLM_FORCE)
STREAM_MLM_UNMASK = tl.constexpr(reference.STREAM_MLM_UNMASK)
STREAM_PLM_SPAN = tl.constexpr(reference.STREAM_PLM_SPAN)
STREAM_PLM_FORCE = tl.constexpr(reference.STREAM_PLM_FORCE)
STREAM_PLM_UNMASK = tl.constexpr(reference.STREAM_PLM_UNMASK)
STREAM_PLM_PERM = tl.constexpr(reference.STREAM_PLM_PERM)
STREAM_GUMBEL = tl.constexpr(reference.STREAM_GUMBEL)


@triton.jit
def philox_words(seed, counter, row, stream):
    """The four uint32 words of counter ``(counter, row, stream, 0)`` (``counter`` may be a block)."""
    counter = ((row * 0).to(tl.int64) + counter).to(tl.uint32)  # a tensor, also from a literal
    zero = counter * 0
    return tl.philox(seed, counter, zero + row.to(tl.uint32), zero + stream, zero)


@triton.jit
def draw(seed, stream, row, element):
    """uint32 draw ``element`` of ``stream`` for ``row`` (scalar or block ``element``)."""
    element = (row * 0).to(tl.int64) + element  # a tensor, also from a literal
    w0, w1, w2, w3 = philox_words(seed, element >> 2, row, stream)
    which = element & 3
    return tl.where(which == 0, w0, tl.where(which == 1, w1, tl.where(which == 2, w2, w3)))


@triton.jit
def block_draws(seed, stream, row, first_element, BLOCK: tl.constexpr):
    """Draws of elements ``first_element + arange(BLOCK)``; ``first_element`` is a multiple of 4.

    One Philox call per four elements; ``tl.interleave`` puts its words in element order.
    """
    counters = (first_element >> 2) + tl.arange(0, BLOCK // 4)
    w0, w1, w2, w3 = philox_words(seed, counters, row, stream)
    return tl.interleave(tl.interleave(w0, w2), tl.interleave(w1, w3))


@triton.jit
def uniform_below(word, n):
    """Integer in ``[0, n)`` from a uint32 draw, ``(word * n) >> 32`` in 64-bit math, as int64."""
    n = ((word * 0).to(tl.int64) + n).to(tl.uint64)  # a tensor, also from a literal
    return ((word.to(tl.uint64) * n) >> 32).to(tl.int64)
