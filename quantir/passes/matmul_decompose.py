"""`matmul-decompose`: matrix products in the sizes, layouts and widths a target runs.

    matmul-decompose{max-k=1024 max-n=1024 to-conv=true split-16bit=true rounding=tflite}

Options (0 = no limit; defaults: no limits, no conv, split 16-bit, tflite):

`max-k`, `max-n` (float graph). An `nn.matmul` / `nn.gemm` whose right-hand side is an
`nn.constant` and whose contraction size K or output-column count N is above the
limit is cut into tiles of at most the limit (in order; the last tile takes the
rest). K tiles are products of slices of the activation (`nn.slice`) with row blocks
of the weight (sliced at compile time), summed by a chain of `nn.add`; N tiles are
products with column blocks of the weight, joined by `nn.concat` on the output
column axis. A gemm's bias (beta * C) is added once, after the tiles; a fused
activation goes to the op that completes each output column (the bias add if any).

`to-conv` (float graph). The same products become 1x1 `nn.conv`s in NCHW layout:
the activation (..., M, K) is transposed and reshaped to (batch, K, 1, M) (its rows
become the width axis, its leading axes the batch), the weight (K, N) becomes
(N, K, 1, 1), and the result (batch, N, 1, M) is reshaped and transposed back to
(..., M, N); where M or N is 1 a reshape alone does, and a gemm's trans_a input
(K, M) needs no transpose. With tiles, the activation moves to conv layout once, K
tiles slice its channel axis and N tiles are concatenated on it. A constant C that
is the same for every row becomes the conv bias (of the first K tile), any other C
an `nn.add` after the layout is restored. A batched constant right-hand side
(rank > 2) stays a matmul (reported); activation x activation products too.

A gemm that is rewritten loses trans_b and alpha (folded into the weight at compile
time: alpha changes the weights by float rounding only) and trans_a (an
`nn.transpose`, or nothing in conv layout). Products under the limits are left
alone unless `to-conv` is set.

Names: with one tile the product keeps the node name; tiles are `<node>/k<i>`,
`<node>/n<j>` or `<node>/n<j>_k<i>`, their weights `<weight>/<tile>`; the other
pieces are `<node>/slice_k<i>`, `<node>/add_..`, `<node>/concat`, `<node>/bias`,
`<node>/transpose_a`, `<node>/to_nchw[_transpose]`, `<node>/from_nchw[_transpose]`.
The op that ends the rewrite takes over the product's SSA name and calibrated range
(run the pass before `calibrate` so the new pieces get ranges of their own).

`split-16bit` (integer program). A `qi.matmul` with two 16-bit operands becomes
four 8-bit `qi.matmul`s (`lower-to-int` already splits its own a16 products so;
this is for a program that still has 16 x 16-bit ones). Each 16-bit storage value splits into bytes as
`quantir.lowering.byte_split` says, x - zp = (hi - zh) * 256 + (lo - zl) (parts
`<..>/hi`, `<..>/lo`). A computed operand is split by two `qi.lookup`s (65536-entry
tables of x >> 8 and x & 255, the same for every zero point); a `q.constant` operand,
also per channel, is split at compile time. With A = a - zp_a,
B = b - zp_b and the products P_ab of the parts (`<node>/hi_hi`, `hi_lo`, `lo_hi`,
`lo_lo`, accumulators of scale 2^16, 2^8, 2^8 and 1 times s_a s_b, the bias added
to `lo_lo`):

    A @ B + bias = ((P_hh * 256 + (P_hl + P_lh)) * 256) + (P_ll + bias)

evaluated by `qi.add`s and two `q.requant`s by exactly 256 (multiplier 2^30, shift
9, the pass's rounding mode: exact for left shifts in every mode) into one
accumulator of the original scale s_a s_b. It equals the original `qi.matmul`
whenever no intermediate value saturates; the intermediates are bounded by
S = sum_k (|A_k| + 255) (|B_k| + 255) + |bias|, so S <= 2^31 - 1 suffices for
`single` and `tosa`, and 2 S <= 2^31 - 1 for `tflite`, whose requant saturates
x << shift to int32 before its doubling high multiply.

What the pass cannot rewrite it leaves valid and as it is, with one QuantirWarning
line per op naming it and the reason (a dynamic shape, a computed right-hand side, a
per-channel computed 16-bit operand, an elided constant, ...).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType
from xdsl.ir import Attribute, Block, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import VerifyException

from quantir.dialects import nn, q, qi
from quantir.dialects.q import PerAxisQuantizedType, QuantizedType
from quantir.errors import PipelineError
from quantir.ir import array_of, dense_of, is_elided, shape_of
from quantir.lowering.byte_split import BYTE, byte_types, split_bytes, split_table
from quantir.passes.constants import (
    constant_value,
    erase,
    erase_unused,
    new_constant,
    replacement_name,
    report,
    take_over,
)

POW2_MULTIPLIER = 1 << 30
"""Q31 multiplier 0.5: with shift e + 1 a requant multiplies by exactly 2^e."""


@dataclass(frozen=True)
class MatMulDecomposePass(ModulePass):
    """Tile float matmuls / gemms with a constant weight above `max-k` / `max-n`, turn
    them into 1x1 convs (`to-conv`), and split 16 x 16-bit `qi.matmul`s into 8-bit
    products (`split-16bit`); see the module docstring."""

    name = "matmul-decompose"

    max_k: int = 0
    max_n: int = 0
    to_conv: bool = False
    split_16bit: bool = True
    rounding: str = "tflite"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        report(self.name, decompose_matmuls(op, max_k=self.max_k, max_n=self.max_n,
                                            to_conv=self.to_conv,
                                            split_16bit=self.split_16bit,
                                            rounding=self.rounding))


def decompose_matmuls(root: Operation, *, max_k: int = 0, max_n: int = 0,
                      to_conv: bool = False, split_16bit: bool = True,
                      rounding: str = "tflite") -> list[str]:
    """Rewrite every product under `root` as the options ask; one line per product left
    as it is (or only partly rewritten), saying why."""
    for option, value in (("max-k", max_k), ("max-n", max_n)):
        if value < 0:
            raise PipelineError(f"matmul-decompose: {option}={value}; give a positive limit, "
                                "or 0 for none")
    if rounding not in q.ROUNDING_MODES:
        raise PipelineError(f"matmul-decompose: unknown rounding '{rounding}'; expected one "
                            f"of {', '.join(q.ROUNDING_MODES)}")
    lines: list[str] = []
    splits: dict[tuple[SSAValue, Block], list[_Part]] = {}
    for op in list(root.walk()):
        try:
            if isinstance(op, nn.MatMulOp | nn.GemmOp):
                line = rewrite_float_product(op, max_k, max_n, to_conv)
            elif split_16bit and isinstance(op, qi.MatMulOp):
                line = split_16bit_matmul(op, rounding, splits)
            else:
                continue
        except (VerifyException, ValueError) as error:
            # Nothing is inserted before a rewrite has built all its ops.
            line = f"{_label(op)} left as it is: {error}"
        if line:
            lines.append(line)
    return lines


# --------------------------------------------------------------------------------------
# Building the replacement of one op
# --------------------------------------------------------------------------------------


class _Emitter:
    """The ops replacing `anchor`, named `<node>/<suffix>` (SSA `<hint>_<suffix>`),
    inserted before it only when all are built (`finish`)."""

    def __init__(self, anchor: nn.InferredOperation):
        self.anchor = anchor
        self.name = anchor.node_name
        self.hint = anchor.results[0].name_hint
        self.ops: list[Operation] = []

    def emit(self, op: Operation, hint_suffix: str) -> SSAValue:
        result = op.results[0]
        if self.hint:
            result.name_hint = f"{self.hint}_{hint_suffix}"
        self.ops.append(op)
        return result

    def build(self, cls: type[nn.InferredOperation], operands: Sequence[SSAValue],
              properties: Mapping[str, object], suffix: str | None,
              hint_suffix: str | None = None) -> SSAValue:
        """`cls` named `<node>/<suffix>` (the node name itself for suffix None)."""
        name = self.name if suffix is None else f"{self.name}/{suffix}"
        op = cls.build_from(list(operands), properties, name)
        return self.emit(op, hint_suffix or suffix or cls.name.split(".")[-1])

    def constant(self, array: np.ndarray, name: str) -> SSAValue:
        op = new_constant(np.ascontiguousarray(array), name)
        self.ops.append(op)
        return op.results[0]

    def finish(self, result: SSAValue) -> None:
        """Insert the ops; `result` takes over the anchor's uses, name and range."""
        block = self.anchor.parent_block()
        assert block is not None
        block.insert_ops_before(self.ops, self.anchor)
        take_over(result, self.anchor)


def _label(op: nn.InferredOperation) -> str:
    return f"{op.name} '{op.node_name}'"


# --------------------------------------------------------------------------------------
# Float graph: tiles and 1x1 convs
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Product:
    """A float matmul / gemm as x @ W (+ bias), the gemm's attributes folded."""

    x: SSAValue
    x_transposed: bool
    """x is (K, M), a gemm's trans_a input."""
    weight: np.ndarray
    """(K, N), (K,) or batched (..., K, N); a gemm's trans_b and alpha applied."""
    weight_name: str
    bias: SSAValue | None
    """Added to the (..., M, N) result: a computed C (beta 1), or the constant below."""
    bias_array: np.ndarray | None
    """beta * C, when C is a constant."""
    activation: dict[str, Attribute]
    """The product's fused activation properties (`activation`, `activation_*`)."""

    @property
    def k(self) -> int:
        return self.weight.shape[-2] if self.weight.ndim >= 2 else self.weight.shape[0]

    @property
    def n(self) -> int:
        return self.weight.shape[-1] if self.weight.ndim >= 2 else 1


def _sizes(op: nn.MatMulOp | nn.GemmOp) -> tuple[int, int]:
    """K and N of the product, from its operand types."""
    b = shape_of(op.operands[1].type)
    if isinstance(op, nn.GemmOp):
        k, n = b[::-1] if op.props.int("trans_b") else b
        return k, n
    return (b[-2], b[-1]) if len(b) >= 2 else (b[0], 1)


def _tiles(size: int, limit: int) -> list[tuple[int, int]]:
    """[start, end) ranges of at most `limit` (0: one range) covering `size`."""
    if limit <= 0 or size <= limit:
        return [(0, size)]
    return [(start, min(start + limit, size)) for start in range(0, size, limit)]


def rewrite_float_product(op: nn.MatMulOp | nn.GemmOp, max_k: int, max_n: int,
                          to_conv: bool) -> str | None:
    """Tile `op` and / or make it a conv as asked; the report line for what was not
    done (None when everything asked was done, or nothing was asked)."""
    k, n = _sizes(op)
    wanted = []
    if 0 < max_k < k:
        wanted.append(f"K {k} > max-k {max_k}")
    if 0 < max_n < n:
        wanted.append(f"N {n} > max-n {max_n}")
    if to_conv:
        wanted.append("to-conv")
    if not wanted:
        return None
    why = f"{_label(op)} left as it is ({', '.join(wanted)})"
    dynamic = [str(v.type) for v in (*op.operands, *op.results)
               if any(d < 0 for d in shape_of(v.type))]
    if dynamic:
        return f"{why}: dynamic shape {dynamic[0]}"
    product = _read_product(op)
    if isinstance(product, str):
        return f"{why}: {product}"
    conv = to_conv and product.weight.ndim <= 2
    note = None
    if to_conv and not conv:
        note = (f"{_label(op)} not turned into a conv: its constant right-hand side is "
                f"batched ({'x'.join(map(str, product.weight.shape))})")
        if len(wanted) == 1:
            return note
    emit = _Emitter(op)
    result = _build_product(emit, op, product, max_k, max_n, conv)
    weight, c = op.operands[1].owner, op.operands[2].owner if len(op.operands) == 3 else None
    emit.finish(result)
    erase_unused(o for o in (weight, c) if isinstance(o, Operation))
    return note


def _read_product(op: nn.MatMulOp | nn.GemmOp) -> _Product | str:
    """The product with constant weight, or why it has none."""
    weight_value = op.operands[1]
    weight = constant_value(weight_value)
    if weight is None:
        return "its right-hand side is not an nn.constant (or its data was elided)"
    owner = weight_value.owner
    assert isinstance(owner, nn.ConstantOp)
    activation = {key: value for key, value in op.properties.items()
                  if key.startswith("activation")}
    if isinstance(op, nn.MatMulOp):
        return _Product(op.lhs, False, weight, owner.node_name, None, None, activation)
    props = op.props
    if props.int("trans_b"):
        weight = weight.T
    alpha = props.float("alpha")
    if alpha != 1.0:
        weight = (weight.astype(np.float64) * alpha).astype(weight.dtype)
    bias, bias_array = None, None
    beta = props.float("beta")
    if op.c is not None and beta != 0.0:
        c = constant_value(op.c)
        if c is not None:
            bias_array = c if beta == 1.0 else (c.astype(np.float64) * beta).astype(c.dtype)
        elif beta != 1.0:
            return f"its C is computed and beta is {beta}, not 1"
        else:
            bias = op.c
    return _Product(op.a, bool(props.int("trans_a")), weight, owner.node_name, bias,
                    bias_array, activation)


def _tag(i: int, j: int, k_count: int, n_count: int) -> str | None:
    parts = ([f"n{j}"] if n_count > 1 else []) + ([f"k{i}"] if k_count > 1 else [])
    return "_".join(parts) or None


def _per_column(bias: np.ndarray, n: int) -> np.ndarray | None:
    """The (N,) vector a C broadcasting to (M, N) equals on every row, or None."""
    if bias.ndim > 0 and any(d != 1 for d in bias.shape[:-1]):
        return None
    return np.broadcast_to(bias.reshape(bias.shape[-1:] or (1,)), (n,))


def _build_product(emit: _Emitter, op: nn.MatMulOp | nn.GemmOp, p: _Product, max_k: int,
                   max_n: int, conv: bool) -> SSAValue:
    k_tiles, n_tiles = _tiles(p.k, max_k), _tiles(p.n, max_n)
    layout = _ConvLayout.of(p) if conv else None
    if layout is not None:
        x = layout.enter(emit, p.x)
        k_axis = 1
    else:
        x = p.x
        if p.x_transposed:
            x = emit.build(nn.TransposeOp, [x], {"perm": [1, 0]}, "transpose_a")
        k_axis = len(shape_of(x.type)) - 1
    conv_bias = None
    if layout is not None and p.bias_array is not None:
        conv_bias = _per_column(p.bias_array, p.n)
    separate_bias = p.bias is not None or (p.bias_array is not None and conv_bias is None)
    column_activation = {} if separate_bias else p.activation

    slices = [x] if len(k_tiles) == 1 else [
        emit.build(nn.SliceOp, [x], _slice_props(shape_of(x.type), k_axis, k0, k1),
                   f"slice_k{i}") for i, (k0, k1) in enumerate(k_tiles)]
    columns = []
    for j, (n0, n1) in enumerate(n_tiles):
        total = None
        for i, (k0, k1) in enumerate(k_tiles):
            tag = _tag(i, j, len(k_tiles), len(n_tiles))
            weight = _weight_tile(p.weight, k0, k1, n0, n1, conv=layout is not None)
            w_name = f"{p.weight_name}/{tag}" if tag else \
                replacement_name(op.operands[1], f"{p.weight_name}/conv")
            operands = [slices[i], emit.constant(weight, w_name)]
            activation = column_activation if len(k_tiles) == 1 else {}
            if layout is None:
                part = emit.build(nn.MatMulOp, operands, activation, tag, tag or "matmul")
            else:
                if conv_bias is not None and i == 0:
                    b_name = f"{_bias_name(op)}/n{j}" if len(n_tiles) > 1 else \
                        replacement_name(op.operands[2], _bias_name(op))
                    operands.append(emit.constant(conv_bias[n0:n1].copy(), b_name))
                part = emit.build(nn.ConvOp, operands, {**CONV_1X1, **activation}, tag,
                                  tag or "conv")
            last = i == len(k_tiles) - 1
            total = part if total is None else emit.build(
                nn.AddOp, [total, part], column_activation if last else {}, f"add_{tag}")
        assert total is not None
        columns.append(total)
    out = columns[0] if len(columns) == 1 else emit.build(
        nn.ConcatOp, columns, {"axis": 1 if layout is not None else _column_axis(op)},
        "concat")
    if layout is not None:
        out = layout.leave(emit, out, shape_of(op.results[0].type))
    if separate_bias:
        bias = p.bias
        if bias is None:
            assert p.bias_array is not None
            bias = emit.constant(p.bias_array, replacement_name(op.operands[2], _bias_name(op)))
        out = emit.build(nn.AddOp, [out, bias], p.activation, "bias")
    return out


def _column_axis(op: Operation) -> int:
    """The column axis of a product's result (its last)."""
    return len(shape_of(op.results[0].type)) - 1


def _bias_name(op: nn.MatMulOp | nn.GemmOp) -> str:
    c = op.operands[2].owner if len(op.operands) == 3 else None
    return c.node_name if isinstance(c, nn.ConstantOp) else f"{op.node_name}/bias"


def _weight_tile(weight: np.ndarray, k0: int, k1: int, n0: int, n1: int, conv: bool) \
        -> np.ndarray:
    """Rows k0:k1 and columns n0:n1 of the weight: as it is laid out (a 1-d weight stays
    1-d), or as the (N, K, 1, 1) weight of a 1x1 conv."""
    if weight.ndim == 1:
        rows = weight[k0:k1]
        return rows.reshape(1, -1, 1, 1) if conv else rows
    block = weight[..., k0:k1, n0:n1]
    return block.T.reshape(n1 - n0, k1 - k0, 1, 1) if conv else block


CONV_1X1: Mapping[str, object] = MappingProxyType(
    {"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "group": 1})
"""The properties of the 1x1 stride-1 conv a product becomes."""


def _slice_props(shape: Sequence[int], axis: int, start: int, end: int) -> dict[str, object]:
    starts, ends = [0] * len(shape), list(shape)
    starts[axis], ends[axis] = start, end
    return {"starts": starts, "ends": ends, "steps": [1] * len(shape)}


@dataclass(frozen=True)
class _ConvLayout:
    """An activation (*lead, M, K) as an NCHW image (batch, K, 1, M), and back."""

    lead: tuple[int, ...]
    m: int
    k: int
    transposed: bool

    @staticmethod
    def of(p: _Product) -> _ConvLayout:
        shape = shape_of(p.x.type)
        if p.x_transposed:
            return _ConvLayout((), shape[1], shape[0], True)
        lead = shape[:-2] if len(shape) >= 2 else ()
        return _ConvLayout(lead, shape[-2] if len(shape) >= 2 else 1, shape[-1], False)

    def enter(self, emit: _Emitter, x: SSAValue) -> SSAValue:
        rank = len(shape_of(x.type))
        if self.m > 1 and not self.transposed:
            perm = [*range(rank - 2), rank - 1, rank - 2]
            x = emit.build(nn.TransposeOp, [x], {"perm": perm}, "to_nchw_transpose")
        image = (math.prod(self.lead), self.k, 1, self.m)
        return emit.build(nn.ReshapeOp, [x], {"shape": list(image)}, "to_nchw")

    def leave(self, emit: _Emitter, y: SSAValue, out_shape: Sequence[int]) -> SSAValue:
        """(batch, N, 1, M) -> the product's result shape (*lead, M, N)."""
        n = shape_of(y.type)[1]
        if self.m == 1 or n == 1:
            return emit.build(nn.ReshapeOp, [y], {"shape": list(out_shape)}, "from_nchw")
        y = emit.build(nn.ReshapeOp, [y], {"shape": [*self.lead, n, self.m]}, "from_nchw")
        rank = len(self.lead) + 2
        perm = [*range(rank - 2), rank - 1, rank - 2]
        return emit.build(nn.TransposeOp, [y], {"perm": perm}, "from_nchw_transpose")


# --------------------------------------------------------------------------------------
# Integer program: 16 x 16-bit products as 8-bit ones
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    """One byte of a split 16-bit operand: the value, its weight 2^exponent, its name."""

    value: SSAValue
    exponent: int
    tag: str


def split_16bit_matmul(op: qi.MatMulOp, rounding: str,
                       splits: dict[tuple[SSAValue, Block], list[_Part]]) -> str | None:
    """Rewrite a 16 x 16-bit `qi.matmul` into 8-bit products (module docstring); the
    report line when it cannot be, None otherwise (also for any other width).

    `splits` remembers the parts of operands split so far in each block, so that an
    activation read by several matmuls is looked up once."""
    elements = [qi.quantized(v.type, what) for v, what in ((op.lhs, "lhs"), (op.rhs, "rhs"))]
    if any(e.storage_bits != 16 for e in elements):
        return None
    for value, element in zip((op.lhs, op.rhs), elements, strict=True):
        problem = _split_problem(value, element)
        if problem:
            return f"{_label(op)} left as it is (16 x 16-bit): {problem}"
    block = op.parent_block()
    assert block is not None
    emit = _Emitter(op)
    parts = {}
    for value, side in ((op.lhs, "lhs"), (op.rhs, "rhs")):
        key = (value, block)
        if key not in parts:
            parts[key] = splits.get(key) or _split(emit, value, side)
    lhs, rhs = parts[(op.lhs, block)], parts[(op.rhs, block)]
    groups: dict[int, list[SSAValue]] = {}
    for a in lhs:
        for b in rhs:
            exponent = a.exponent + b.exponent
            operands = [a.value, b.value]
            if exponent == 0 and op.bias is not None:
                operands.append(op.bias)
            tag = f"{a.tag}_{b.tag}"
            groups.setdefault(exponent, []).append(emit.build(qi.MatMulOp, operands, {}, tag))
    sums = {}
    for exponent, values in groups.items():
        total = values[0]
        for value in values[1:]:
            total = emit.build(qi.AddOp, [total, value], {}, f"sum{exponent}")
        sums[exponent] = total
    result = _horner(emit, sums, rounding)
    operands = [op.lhs.owner, op.rhs.owner]
    emit.finish(result)
    splits.update(parts)  # only now: they are in the block
    for owner in operands:
        if isinstance(owner, q.ConstantOp) and not owner.output.uses:
            erase(owner)
    return None


def _horner(emit: _Emitter, sums: dict[int, SSAValue], rounding: str) -> SSAValue:
    """sum_e sums[e] * 2^e as ((s_hi * 2^d + s_next) * 2^d' + ...) at the lowest scale:
    each step a power-of-two `q.requant` to the next group's type and a `qi.add`."""
    exponents = sorted(sums, reverse=True)
    total = sums[exponents[0]]
    for high, low in zip(exponents, exponents[1:], strict=False):
        target = sums[low].type
        assert isinstance(target, TensorType)
        element = target.element_type
        assert isinstance(element, QuantizedType)
        shift = high - low + 1  # multiplier 2^30 is one half
        name = f"{emit.name}/rescale{high}"
        if isinstance(element, PerAxisQuantizedType):  # one (equal) pair per channel
            count = element.num_channels
            requant = q.RequantOp(total, target, [POW2_MULTIPLIER] * count, [shift] * count,
                                  name, rounding, element.axis)
        else:
            requant = q.RequantOp(total, target, POW2_MULTIPLIER, shift, name, rounding)
        scaled = emit.emit(requant, f"rescale{high}")
        total = emit.build(qi.AddOp, [scaled, sums[low]], {}, f"add{low}")
    return total


def _split_problem(value: SSAValue, element: QuantizedType) -> str | None:
    """Why a 16-bit operand cannot be split into bytes, or None."""
    owner = value.owner
    if isinstance(owner, q.ConstantOp):
        if is_elided(owner.value):
            return f"constant '{owner.node_name}' was elided when the module was printed"
        return None
    if isinstance(element, PerAxisQuantizedType):
        return ("a per-channel operand computed at run time has no per-tensor byte split "
                "(qi.lookup results are per tensor)")
    return None


def _split(emit: _Emitter, value: SSAValue, side: str) -> list[_Part]:
    """hi and lo parts of a 16-bit operand (exponents 8 and 0)."""
    type_ = value.type
    assert isinstance(type_, TensorType)
    element = type_.element_type
    assert isinstance(element, QuantizedType)
    hi_type, lo_type = (TensorType(t, type_.get_shape()) for t in byte_types(element))
    owner = value.owner
    base = value.name_hint
    if isinstance(owner, q.ConstantOp):
        hi, lo = split_bytes(array_of(owner.value))  # type: ignore[arg-type]
        values = [q.ConstantOp(dense_of(array), t, f"{owner.node_name}/{tag}")
                  for array, t, tag in ((hi, hi_type, "hi"), (lo, lo_type, "lo"))]
    else:
        hi, lo = split_table(element)
        values = [qi.LookupOp.create(operands=[value], result_types=[t], properties={
            "onnx_name": StringAttr(f"{emit.name}/{side}_{tag}"), "table": dense_of(table)})
                  for table, t, tag in ((hi, hi_type, "hi"), (lo, lo_type, "lo"))]
    parts = []
    for new, tag, exponent in zip(values, ("hi", "lo"), (BYTE, 0), strict=True):
        result = emit.emit(new, f"{side}_{tag}")
        if base:
            result.name_hint = f"{base}_{tag}"
        parts.append(_Part(result, exponent, tag))
    return parts
