"""`layernorm-decompose`: write every `nn.layer_norm` out as elementwise ops and reductions.

A target that has no LayerNorm kernel (or that must quantize its pieces at different
widths) gets the same function as ops it can legalise and quantize one by one:

    mean     = reduce_mean(x, axes = axis..rank-1, keepdims = 1)    <name>/mean
    centered = sub(x, mean)                                         <name>/center
    square   = mul(centered, centered)                              <name>/square
    variance = reduce_mean(square, same axes, keepdims = 1)         <name>/variance
    shifted  = add(variance, epsilon)                               <name>/add_epsilon
    std      = sqrt(shifted)                                        <name>/sqrt
    inv      = reciprocal(std)                                      <name>/rsqrt
    normed   = mul(centered, inv)                                   <name>/normalize
    scaled   = mul(normed, scale)                                   <name>/scale
    out      = add(scaled, bias)        (only with a bias)          <name>/shift

`<name>` is the LayerNorm's ONNX node name, so a per-layer glob (`ln1/*`) selects
every piece and a narrower one (`ln1/variance`, `*/sqrt`) a part of the variance
path. Epsilon becomes a one-element `nn.constant` named `<name>/epsilon`. SSA names are
the LayerNorm result's name with the same suffixes (`%ln_mean`, `%ln_center`, ...);
the last op keeps the LayerNorm result's own name, so its readers print unchanged.
`layernorm-fuse` recognises exactly this form and turns it back into the LayerNorm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass

from quantir.dialects import nn
from quantir.ir import dtype_of, shape_of, splat_of


def decompose_layer_norm(op: nn.LayerNormOp) -> list[nn.NNOperation]:
    """The ops computing `op` step by step, in program order (not inserted anywhere);
    the last op's result is the LayerNorm's value."""
    name = op.node_name
    x = op.input
    axis = op.props.int("axis")
    x_type = x.type
    assert isinstance(x_type, TensorType)  # nn.layer_norm's verifier guarantees it
    axes = list(range(axis, len(shape_of(x_type))))
    base_hint = op.output.name_hint
    ops: list[nn.NNOperation] = []

    def step(cls: type[nn.NNOperation], operands: Sequence[SSAValue], suffix: str,
             properties: Mapping[str, object] | None = None) -> SSAValue:
        new = cls.build_from(operands, properties or {}, f"{name}/{suffix}")
        # Hints follow the result's name, not the node name: they stay valid identifiers
        # without escaping, and `%ln` gives `%ln_mean`, `%ln_center`, ...
        new.results[0].name_hint = f"{base_hint}_{suffix}" if base_hint else None
        ops.append(new)
        return new.results[0]

    reduce = {"axes": axes, "keepdims": 1}
    mean = step(nn.ReduceMeanOp, [x], "mean", reduce)
    centered = step(nn.SubOp, [x, mean], "center")
    square = step(nn.MulOp, [centered, centered], "square")
    variance = step(nn.ReduceMeanOp, [square], "variance", reduce)
    # Epsilon in the input's element type, so the add does not promote the variance.
    # Shape [1] rather than rank 0: that is what the importer makes of an ONNX scalar,
    # and `quantir.ir.dense_of` (used by quantize) turns a rank-0 array into shape [1].
    epsilon_value = splat_of(op.props.float("epsilon"), (1,), dtype_of(x_type.element_type))
    epsilon = step(nn.ConstantOp, [], "epsilon", {"value": epsilon_value})
    shifted = step(nn.AddOp, [variance, epsilon], "add_epsilon")
    std = step(nn.SqrtOp, [shifted], "sqrt")
    inv = step(nn.ReciprocalOp, [std], "rsqrt")
    normed = step(nn.MulOp, [centered, inv], "normalize")
    out = step(nn.MulOp, [normed, op.scale], "scale")
    if op.bias is not None:
        out = step(nn.AddOp, [out, op.bias], "shift")
    out.name_hint = base_hint
    return ops


def decompose_layer_norms(module: ModuleOp) -> int:
    """Decompose every `nn.layer_norm` in the module in place; the number rewritten."""
    count = 0
    for op in list(module.walk()):
        if not isinstance(op, nn.LayerNormOp):
            continue
        block = op.parent_block()
        assert block is not None
        new_ops = decompose_layer_norm(op)
        block.insert_ops_before(new_ops, op)
        op.output.replace_all_uses_with(new_ops[-1].results[0])
        block.erase_op(op)
        count += 1
    return count


@dataclass(frozen=True)
class LayerNormDecomposePass(ModulePass):
    """Rewrite every `nn.layer_norm` into reduce_mean / sub / mul / add / sqrt /
    reciprocal ops named `<layer norm>/<step>` (see the module docstring)."""

    name = "layernorm-decompose"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        decompose_layer_norms(op)
