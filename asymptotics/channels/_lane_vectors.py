"""Eight float64 lanes as one value in numba code, for reductions in a fixed order.

The fibre kernels add their terms over the nodes in ``LANES`` partial sums, lane ``j``
taking nodes ``j, j + LANES, j + 2 LANES, ...`` in order, and add the lanes last,
``((0 + s_0) + s_1) + ... + s_7``: the same order, so the same bits, on every CPU.  Written
as scalar code over an accumulator array, LLVM keeps those sums scalar (numba runs no SLP
vectoriser, and the accumulators live in memory).  A :class:`LaneVector` is an LLVM
``<8 x double>`` held in registers: ``a + b``, ``a - b`` and ``a * b`` are one IEEE
operation per lane, :func:`lanes_load` reads eight consecutive doubles (:func:`lanes_store`
writes them), :func:`lanes_total` adds the lanes in their order, and :func:`lanes_max` /
:func:`lanes_largest` take maxima as numba's ``max`` does.  Lane by lane this is the scalar
code's arithmetic, so the results are the same bits (tested), in vector registers of
whatever width the CPU has (one AVX-512 register, two AVX2 or four SSE2 registers).

A lane vector exists only inside compiled code: it cannot be passed in from Python.
"""

from __future__ import annotations

import operator

from llvmlite import ir
from numba import types
from numba.extending import intrinsic, models, overload, register_model

LANES = 8
_VECTOR = ir.VectorType(ir.DoubleType(), LANES)


class LaneVector(types.Type):
    """numba type of ``LANES`` float64 lanes (LLVM ``<LANES x double>``)."""

    def __init__(self):
        super().__init__(name=f"LaneVector{LANES}")


lane_vector = LaneVector()


@register_model(LaneVector)
class _LaneVectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VECTOR)


def _lane_array(array, start) -> bool:
    """Whether ``array[start : start + LANES]`` can be one vector load or store: a
    contiguous 1-D float64 array and an integer index."""
    return (isinstance(array, types.Array) and array.ndim == 1 and array.layout == "C"
            and array.dtype == types.float64 and isinstance(start, types.Integer))


@intrinsic
def lanes_zero(typingctx):
    """``LANES`` zeros (+0.0)."""

    def codegen(context, builder, signature, args):
        return ir.Constant(_VECTOR, None)

    return lane_vector(), codegen


@intrinsic
def lanes_load(typingctx, array, start):
    """``array[start : start + LANES]`` of a contiguous 1-D float64 array (no bounds check:
    the kernels pad their node arrays to a multiple of ``LANES``)."""
    if not _lane_array(array, start):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        address = builder.gep(data, [args[1]])
        return builder.load(builder.bitcast(address, _VECTOR.as_pointer()), align=8)

    return lane_vector(array, start), codegen


@intrinsic
def lanes_store(typingctx, array, start, lanes):
    """``array[start : start + LANES] = lanes`` (contiguous 1-D float64, no bounds check)."""
    if not (_lane_array(array, start) and isinstance(lanes, LaneVector)):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        address = builder.gep(data, [args[1]])
        builder.store(args[2], builder.bitcast(address, _VECTOR.as_pointer()), align=8)
        return context.get_dummy_value()

    return types.none(array, start, lanes), codegen


@intrinsic
def lanes_total(typingctx, lanes):
    """``((0.0 + lane_0) + lane_1) + ... + lane_{LANES-1}``."""
    if not isinstance(lanes, LaneVector):
        return None

    def codegen(context, builder, signature, args):
        total = ir.Constant(ir.DoubleType(), 0.0)
        for j in range(LANES):
            lane = builder.extract_element(args[0], ir.Constant(ir.IntType(32), j))
            total = builder.fadd(total, lane)
        return total

    return types.float64(lanes), codegen


@intrinsic
def lanes_fill(typingctx, value):
    """``LANES`` copies of a float64."""
    if not isinstance(value, types.Float):
        return None

    def codegen(context, builder, signature, args):
        x = context.cast(builder, args[0], signature.args[0], types.float64)
        lanes = ir.Constant(_VECTOR, None)
        for j in range(LANES):
            lanes = builder.insert_element(lanes, x, ir.Constant(ir.IntType(32), j))
        return lanes

    return lane_vector(value), codegen


@intrinsic
def lanes_max(typingctx, a, b):
    """Lane by lane ``b if b > a else a``: numba's ``max(a, b)`` on floats, the same bits
    (signed zeros and NaN included)."""
    if not (isinstance(a, LaneVector) and isinstance(b, LaneVector)):
        return None

    def codegen(context, builder, signature, args):
        x, y = args
        return builder.select(builder.fcmp_ordered(">", y, x), y, x)

    return lane_vector(a, b), codegen


@intrinsic
def lanes_largest(typingctx, lanes):
    """``max(... max(max(-inf, lane_0), lane_1) ..., lane_{LANES-1})`` in lane order (numba's
    ``max``, so the bits of the scalar loop)."""
    if not isinstance(lanes, LaneVector):
        return None

    def codegen(context, builder, signature, args):
        out = ir.Constant(ir.DoubleType(), float("-inf"))
        for j in range(LANES):
            lane = builder.extract_element(args[0], ir.Constant(ir.IntType(32), j))
            out = builder.select(builder.fcmp_ordered(">", lane, out), lane, out)
        return out

    return types.float64(lanes), codegen


def _lane_operator(op, instruction: str):
    """``op(a, b)`` on two lane vectors: one IEEE ``instruction`` per lane."""

    @intrinsic
    def lanewise(typingctx, a, b):
        if not (isinstance(a, LaneVector) and isinstance(b, LaneVector)):
            return None

        def codegen(context, builder, signature, args):
            return getattr(builder, instruction)(*args)

        return lane_vector(a, b), codegen

    @overload(op)
    def _overload(a, b):
        if isinstance(a, LaneVector) and isinstance(b, LaneVector):
            return lambda a, b: lanewise(a, b)

    return lanewise


_add = _lane_operator(operator.add, "fadd")
_subtract = _lane_operator(operator.sub, "fsub")
_multiply = _lane_operator(operator.mul, "fmul")
