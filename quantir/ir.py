"""Shared IR plumbing: numpy <-> xDSL tensors, the printer, the parser context.

Weights stay bytes: `array_of` views a dense attribute's bytes as a numpy array
without copying, and `dense_of` wraps an array's bytes without a Python list.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import (
    BytesAttr,
    DenseIntOrFPElementsAttr,
    DenseResourceAttr,
    Float16Type,
    Float32Type,
    Float64Type,
    IntegerType,
    ModuleOp,
    Signedness,
    TensorType,
    f16,
    f32,
    f64,
    i1,
)
from xdsl.ir import Attribute
from xdsl.printer import Printer

from quantir.errors import ModelError

# numpy dtype <-> MLIR element type. Signless integers are signed, as in ONNX.
_NUMPY_TO_ELEMENT: dict[np.dtype, Attribute] = {
    np.dtype(np.float32): f32,
    np.dtype(np.float64): f64,
    np.dtype(np.float16): f16,
    np.dtype(np.bool_): i1,
    np.dtype(np.int8): IntegerType(8),
    np.dtype(np.int16): IntegerType(16),
    np.dtype(np.int32): IntegerType(32),
    np.dtype(np.int64): IntegerType(64),
    np.dtype(np.uint8): IntegerType(8, Signedness.UNSIGNED),
    np.dtype(np.uint16): IntegerType(16, Signedness.UNSIGNED),
    np.dtype(np.uint32): IntegerType(32, Signedness.UNSIGNED),
}

ELIDED_HANDLE = "__elided__"
"""The resource handle a constant prints as when it is above the printing limit."""

DEFAULT_ELIDE_LIMIT = 16
"""Constants with more elements than this print as `dense_resource<__elided__>`."""

HEX_THRESHOLD = 8
"""Constants with more elements than this print as hex bytes (one token, exact)."""


def element_type_of(dtype: np.dtype | type) -> Attribute:
    """The MLIR element type for a numpy dtype."""
    dtype = np.dtype(dtype)
    if dtype not in _NUMPY_TO_ELEMENT:
        raise ModelError(f"tensors of dtype {dtype} are not supported")
    return _NUMPY_TO_ELEMENT[dtype]


def dtype_of(element_type: Attribute) -> np.dtype:
    """The numpy dtype for an MLIR element type."""
    if isinstance(element_type, Float32Type):
        return np.dtype(np.float32)
    if isinstance(element_type, Float64Type):
        return np.dtype(np.float64)
    if isinstance(element_type, Float16Type):
        return np.dtype(np.float16)
    if isinstance(element_type, IntegerType):
        width = element_type.width.data
        if width == 1:
            return np.dtype(np.bool_)
        unsigned = element_type.signedness.data == Signedness.UNSIGNED
        return np.dtype(f"{'u' if unsigned else ''}int{width}")
    storage = getattr(element_type, "storage_type", None)
    if isinstance(storage, IntegerType):  # a quantized type holds its storage integers
        return dtype_of(IntegerType(max(storage.width.data, 8), storage.signedness.data))
    raise ModelError(f"element type {element_type} has no numpy equivalent")


def tensor_type(shape: Sequence[int], dtype: np.dtype | type | Attribute) -> TensorType:
    """`tensor<shape x dtype>` from a shape and a numpy dtype or an element type."""
    element = dtype if isinstance(dtype, Attribute) else element_type_of(dtype)
    return TensorType(element, [int(d) for d in shape])


def shape_of(type_: Attribute) -> tuple[int, ...]:
    assert isinstance(type_, TensorType), f"expected a tensor type, got {type_}"
    return tuple(type_.get_shape())


def dense_of(array: np.ndarray) -> DenseIntOrFPElementsAttr:
    """A dense attribute holding the array's bytes (little-endian, row-major)."""
    # Not np.ascontiguousarray: it turns a 0-d array into shape (1,).
    array = np.asarray(array)
    if not array.flags.c_contiguous:
        array = array.copy(order="C")
    type_ = tensor_type(array.shape, array.dtype)
    return DenseIntOrFPElementsAttr(type_, BytesAttr(array.astype(array.dtype.newbyteorder("<"),
                                                                    copy=False).tobytes()))


def splat_of(value: float | int | bool, shape: Sequence[int], dtype: np.dtype | type) \
        -> DenseIntOrFPElementsAttr:
    """A dense attribute of one repeated value, stored as that one value."""
    one = np.asarray(value, dtype=dtype).astype(np.dtype(dtype).newbyteorder("<"))
    return DenseIntOrFPElementsAttr(tensor_type(shape, dtype), BytesAttr(one.tobytes()))


def array_of(attr: DenseIntOrFPElementsAttr) -> np.ndarray:
    """A read-only numpy view of a dense attribute (a broadcast view for a splat)."""
    dtype = dtype_of(attr.get_element_type()).newbyteorder("<")
    shape = tuple(attr.get_shape())
    flat = np.frombuffer(attr.data.data, dtype=dtype)
    if flat.size == 1 and int(np.prod(shape)) != 1:
        return np.broadcast_to(flat[0], shape)
    return flat.reshape(shape)


def is_elided(attr: Attribute) -> bool:
    return isinstance(attr, DenseResourceAttr) and attr.resource_handle.data == ELIDED_HANDLE


def _splat_bytes(data: bytes, item_size: int) -> bytes | None:
    """The one element's bytes if `data` repeats it, else None."""
    if len(data) <= item_size or len(data) % item_size:
        return None
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, item_size)
    return data[:item_size] if bool((rows == rows[0]).all()) else None


@dataclass(eq=False, repr=False)
class QuantirPrinter(Printer):
    """xDSL's printer, with dense constants printed the way large models need.

    Above `HEX_THRESHOLD` elements a constant prints as one hex string (exact and one
    token for the parser); a constant of one repeated value prints as that value;
    above `elide_limit` elements it prints as `dense_resource<__elided__>` unless
    `elide_limit` is None (MLIR's `--mlir-elide-elementsattrs-if-larger`).
    """

    elide_limit: int | None = DEFAULT_ELIDE_LIMIT

    def print_attribute(self, attribute: Attribute) -> None:
        if isinstance(attribute, DenseIntOrFPElementsAttr):
            count = int(np.prod(attribute.get_shape()))
            if self.elide_limit is not None and count > self.elide_limit:
                self.print_string(f"dense_resource<{ELIDED_HANDLE}> : ")
                self.print_attribute(attribute.type)
                return
            if count > HEX_THRESHOLD:
                item_size = attribute.get_element_type().compile_time_size
                data = attribute.data.data
                data = _splat_bytes(data, item_size) or data
                self.print_string(f'dense<"0x{data.hex().upper()}"> : ')
                self.print_attribute(attribute.type)
                return
        super().print_attribute(attribute)


def print_module(module: ModuleOp, *, elide_limit: int | None = DEFAULT_ELIDE_LIMIT,
                 generic: bool = False) -> str:
    """The module as text; `elide_limit=None` prints every constant whole."""
    out = StringIO()
    printer = QuantirPrinter(stream=out, elide_limit=elide_limit, print_generic_format=generic)
    printer.print_op(module)
    out.write("\n")
    return out.getvalue()


def quantir_context() -> Context:
    """A context with the builtin, func and quantir dialects loaded."""
    from xdsl.dialects.builtin import Builtin
    from xdsl.dialects.func import Func

    from quantir.dialects import all_dialects

    ctx = Context()
    ctx.load_dialect(Builtin)
    ctx.load_dialect(Func)
    for dialect in all_dialects():
        ctx.load_dialect(dialect)
    return ctx


def parse_module(text: str, source_name: str = "<string>") -> ModuleOp:
    """Parse and verify a module; syntax and verifier errors become `ModelError`."""
    from xdsl.parser import Parser
    from xdsl.utils.exceptions import ParseError, VerifyException

    try:
        module = Parser(quantir_context(), text, source_name).parse_module()
        module.verify()
    except ParseError as error:
        raise ModelError(f"{source_name}: {_first_line(str(error))}") from error
    except VerifyException as error:
        raise ModelError(f"{source_name}: invalid IR: {_first_line(str(error))}") from error
    return module


def load_module(path: str | Path) -> ModuleOp:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ModelError(f"{path}: cannot read ({error.strerror})") from error
    return parse_module(text, str(path))


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    # xDSL parse errors print the source line and a caret first; keep the message.
    for line in lines:
        if "error" in line.lower() or line.startswith(("Expected", "Operation")):
            return line
    return lines[-1] if lines else message


def write_atomically(path: Path, text: str) -> None:
    """Write `path` whole or not at all: a temporary file beside it, then a rename.
    The directory must exist; OSError (unwritable, missing) propagates."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
