"""Software prefetch for numba kernels: start loading a cache line before it is needed.

The raw pass reads each block of channels row by row, and a row of the recording is
several kB long: every read lands in a new page, where the hardware prefetchers do not
follow, so without a hint each row waits for memory in turn.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic


@intrinsic
def prefetch(typingctx: Any, array: Any, row: Any, col: Any) -> Any:
    """Ask the CPU to start loading ``array[row, col]`` (2-D) into its caches: a hint, with
    no result and no fault (the index must still lie inside the array)."""
    if not isinstance(array, types.Array) or array.ndim != 2:
        return None
    sig = types.void(array, row, col)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        inds = [
            context.cast(builder, value, ty, types.intp)
            for value, ty in zip(args[1:], signature.args[1:], strict=True)
        ]
        ptr = cgutils.get_item_pointer2(
            context, builder, data=ary.data, shape=cgutils.unpack_tuple(builder, ary.shape),
            strides=cgutils.unpack_tuple(builder, ary.strides), layout=aryty.layout,
            inds=inds, wraparound=False, boundscheck=False,
        )  # fmt: skip
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read, keep in all cache levels, data cache
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen
