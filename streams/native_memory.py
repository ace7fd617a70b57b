"""Raw memory access for the numba kernels: loads and stores at an address, and memcpy.

The kernels read Arrow buffers and write their outputs by address, so a compiled loop needs
no array views (making one allocates, and with numba's reference counting every call that
passes one pays atomic increments). Each load and store is unaligned (``align=1``): Arrow
values and Avro bytes sit at any offset. ``memcpy`` is libc's: a value of a few dozen bytes
costs it about a dozen instructions, a numba byte loop about five a byte. Every kernel
that reads or copies by address takes these from here.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["load_f32", "load_f64", "load_i32", "load_i64", "load_u8", "load_u32", "load_u64",
           "memcpy", "store_f32", "store_u8", "store_u32", "store_u64"]

memcpy = types.ExternalFunction("memcpy", types.voidptr(types.voidptr, types.voidptr,
                                                        types.uintp))


def _load(result: Any, widen: bool = False) -> Any:
    """An intrinsic that loads a ``result`` at an integer address (int32: widened to int64)."""

    def load(typingctx, address):  # type: ignore[no-untyped-def]
        if not isinstance(address, types.Integer):
            return None
        returns = types.int64 if widen else result

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            pointer = builder.inttoptr(args[0], context.get_value_type(result).as_pointer())
            value = builder.load(pointer, align=1)
            return builder.sext(value, ir.IntType(64)) if widen else value

        return returns(address), codegen

    return intrinsic(load)


def _store(stored: Any) -> Any:
    """An intrinsic that stores a value as a ``stored`` at an integer address (a float
    rounds to float32 as numpy's cast does, an integer keeps its low bytes)."""

    def store(typingctx, address, value):  # type: ignore[no-untyped-def]
        if not isinstance(address, types.Integer):
            return None

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            v = context.cast(builder, args[1], signature.args[1], stored)
            pointer = builder.inttoptr(args[0], context.get_value_type(stored).as_pointer())
            builder.store(v, pointer, align=1)
            return context.get_dummy_value()

        return types.void(address, value), codegen

    return intrinsic(store)


load_u8 = _load(types.uint8)
load_i32 = _load(types.int32, widen=True)  # an Arrow offset, as int64
load_i64 = _load(types.int64)
load_u32 = _load(types.uint32)
load_u64 = _load(types.uint64)
load_f64 = _load(types.float64)
load_f32 = _load(types.float32)
store_u8 = _store(types.uint8)
store_u64 = _store(types.uint64)
store_u32 = _store(types.uint32)
store_f32 = _store(types.float32)
