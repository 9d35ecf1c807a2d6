"""`layernorm-fuse`: turn a written-out LayerNorm back into one `nn.layer_norm`.

Older exporters (and `layernorm-decompose`) spell LayerNorm as

    mean     = reduce_mean(x, axes, keepdims = 1)       axes: axis..rank-1
    centered = sub(x, mean)
    square   = pow(centered, 2)  |  mul(centered, centered)
    variance = reduce_mean(square, axes, keepdims = 1)
    shifted  = add(variance, epsilon)                    either operand order
    std      = sqrt(shifted)
    normed   = div(centered, std)  |  mul(centered, reciprocal(std))
    scaled   = mul(normed, gamma)                        either operand order
    out      = add(scaled, beta)                         optional, either order

The pass fuses such a chain only when it is exactly that function:

* both reductions have the same axes, the trailing ones (`axis` is the first), and
  keepdims 1;
* epsilon and the exponent 2 are readable one-element constants that do not change
  the shape they are added to / raise (epsilon finite and non-negative);
* gamma and beta are `nn.constant`s that broadcast to the normalised shape x[axis:];
* no intermediate value has a reader outside the chain (`centered` is read by the
  square and the normalisation only), since it disappears with the fusion.

Anything else is left exactly as it was. The fused op is named after the scope its
pieces share (`ln/mean`, `ln/center`, ... give `ln`, so decompose-then-fuse restores
the original name; `/enc/norm1/ReduceMean`, `/enc/norm1/Sub`, ... give `/enc/norm1`),
or after the op it replaces when they share none or the scope names another op. It
takes over the output's SSA name. The pass prints nothing; `fuse_layer_norms` returns
the ops it created, which is how tests and callers see what was fused.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import VerifyException

from quantir.dialects import nn
from quantir.ir import array_of, shape_of


@dataclass(frozen=True)
class LayerNormMatch:
    """A written-out LayerNorm: the fused op's operands and the ops it replaces."""

    x: SSAValue
    axis: int
    epsilon: float
    scale: SSAValue
    bias: SSAValue | None
    ops: tuple[nn.NNOperation, ...]
    """The matched computation in program order; the last one's result is the output."""
    constants: tuple[nn.ConstantOp, ...]
    """Epsilon and the exponent: erased with the chain unless something else reads them."""


def _other_operand(op: Operation, value: SSAValue) -> SSAValue | None:
    """The operand of a binary op that is not `value` (None unless exactly one is)."""
    lhs, rhs = op.operands
    if lhs is value and rhs is not value:
        return rhs
    if rhs is value and lhs is not value:
        return lhs
    return None


def _scalar_constant(value: SSAValue | None) -> tuple[nn.ConstantOp, float] | None:
    """The constant op and its one value, if `value` is a readable one-element constant
    (an elided constant's value is unknown, so it never matches)."""
    if value is None or not isinstance(value.owner, nn.ConstantOp):
        return None
    attr = value.owner.value
    if not isinstance(attr, DenseIntOrFPElementsAttr):
        return None
    array = array_of(attr)
    if array.size != 1:
        return None
    return value.owner, float(array.reshape(-1)[0])


def _is_parameter(value: SSAValue | None, normalised: Sequence[int]) -> bool:
    """An `nn.constant` that broadcasts to the normalised shape, as LayerNorm's gamma
    and beta must (values are not read: an elided weight still qualifies)."""
    if value is None or not isinstance(value.owner, nn.ConstantOp):
        return False
    try:
        return nn.broadcast_shapes(tuple(normalised), shape_of(value.type)) == tuple(normalised)
    except VerifyException:
        return False


def _is_trailing_reduction(op: Operation | None, axes: tuple[int, ...] | None = None) \
        -> bool:
    """A keepdims-1 reduce_mean over the trailing axes (over exactly `axes` if given)."""
    if not isinstance(op, nn.ReduceMeanOp) or op.props.int("keepdims") != 1:
        return False
    own = op.props.ints("axes")
    rank = len(shape_of(op.input.type))
    return own == tuple(range(own[0], rank)) and (axes is None or own == axes)


def _is_square_of(op: Operation, value: SSAValue) -> tuple[nn.ConstantOp, ...] | None:
    """The constants the square uses (the exponent of a pow) if `op` is value**2 or
    value*value, else None."""
    if isinstance(op, nn.MulOp) and op.lhs is value and op.rhs is value:
        return ()
    if isinstance(op, nn.PowOp) and op.lhs is value and op.output.type == value.type:
        exponent = _scalar_constant(op.rhs)
        if exponent is not None and exponent[1] == 2.0:
            return (exponent[0],)
    return None


def match_layer_norm(mean: nn.ReduceMeanOp) -> LayerNormMatch | None:
    """The written-out LayerNorm whose first reduction is `mean`, or None if the ops
    from `mean` on are not exactly that (see the module docstring)."""
    if not _is_trailing_reduction(mean):
        return None
    x = mean.input
    axes = mean.props.ints("axes")
    normalised = shape_of(x.type)[axes[0]:]
    center = mean.output.get_user_of_unique_use()
    if not (isinstance(center, nn.SubOp) and center.lhs is x and center.rhs is mean.output):
        return None
    centered = center.output
    # `centered` feeds the square and the normalisation, and nothing else.
    users = {use.operation for use in centered.uses}
    if len(users) != 2:
        return None
    squares = [(user, found) for user in users
               if (found := _is_square_of(user, centered)) is not None]
    if len(squares) != 1:
        return None
    square, constants = squares[0]
    (normalize_user,) = users - {square}

    variance = square.results[0].get_user_of_unique_use()
    if not _is_trailing_reduction(variance, axes):
        return None
    assert isinstance(variance, nn.ReduceMeanOp)
    add_epsilon = variance.output.get_user_of_unique_use()
    if not isinstance(add_epsilon, nn.AddOp) or add_epsilon.output.type != variance.output.type:
        return None
    epsilon = _scalar_constant(_other_operand(add_epsilon, variance.output))
    if epsilon is None or not (math.isfinite(epsilon[1]) and epsilon[1] >= 0):
        return None
    sqrt = add_epsilon.output.get_user_of_unique_use()
    if not isinstance(sqrt, nn.SqrtOp):
        return None

    ops: list[nn.NNOperation] = [mean, center, square, variance, add_epsilon, sqrt]
    divide = sqrt.output.get_user_of_unique_use()
    if isinstance(divide, nn.DivOp) and divide.lhs is centered and divide.rhs is sqrt.output:
        normalize: Operation | None = divide
    elif isinstance(divide, nn.ReciprocalOp):
        ops.append(divide)
        normalize = divide.output.get_user_of_unique_use()
        if not (isinstance(normalize, nn.MulOp)
                and _other_operand(normalize, divide.output) is centered):
            return None
    else:
        return None
    if normalize is not normalize_user:
        return None
    assert isinstance(normalize, nn.DivOp | nn.MulOp)
    ops.append(normalize)

    scale_op = normalize.output.get_user_of_unique_use()
    if not isinstance(scale_op, nn.MulOp) or scale_op.output.type != x.type:
        return None
    scale = _other_operand(scale_op, normalize.output)
    if not _is_parameter(scale, normalised):
        return None
    assert scale is not None
    ops.append(scale_op)

    # The shift is optional: an Add of anything but a broadcastable constant after the
    # scale is the next layer's business, and the chain ends at the scale.
    bias = None
    shift = scale_op.output.get_user_of_unique_use()
    if isinstance(shift, nn.AddOp) and shift.output.type == x.type:
        candidate = _other_operand(shift, scale_op.output)
        if _is_parameter(candidate, normalised):
            bias = candidate
            ops.append(shift)
    return LayerNormMatch(x, axes[0], epsilon[1], scale, bias, tuple(ops),
                          (epsilon[0], *constants))


def _fused_name(match: LayerNormMatch, taken: set[str]) -> str:
    """The scope the matched ops share, else the replaced output op's name."""
    prefix = os.path.commonprefix([op.node_name for op in match.ops])
    scope = prefix[:prefix.rfind("/")] if "/" in prefix else ""
    if scope and scope not in taken:
        return scope
    return match.ops[-1].node_name


def fuse(match: LayerNormMatch, name: str) -> nn.LayerNormOp:
    """Replace the matched chain by one `nn.layer_norm` named `name`, where its output
    op was (every operand is defined before that point)."""
    output = match.ops[-1]
    block = output.parent_block()
    assert block is not None
    operands = [match.x, match.scale] + ([match.bias] if match.bias is not None else [])
    fused = nn.LayerNormOp.build_from(operands, {"axis": match.axis, "epsilon": match.epsilon},
                                      name)
    assert isinstance(fused, nn.LayerNormOp)
    block.insert_op_before(fused, output)
    hint = output.results[0].name_hint
    output.results[0].replace_all_uses_with(fused.output)
    fused.output.name_hint = hint
    for op in reversed(match.ops):  # readers before the values they read
        block.erase_op(op)
    for constant in dict.fromkeys(match.constants):  # a constant may serve twice
        if constant.parent is not None and constant.output.first_use is None:
            block.erase_op(constant)
    return fused


def fuse_layer_norms(module: ModuleOp) -> list[nn.LayerNormOp]:
    """Fuse every written-out LayerNorm in the module in place; the new ops, in order."""
    taken = {op.node_name for op in module.walk() if isinstance(op, nn.NNOperation)}
    fused: list[nn.LayerNormOp] = []
    for op in list(module.walk()):
        # An op erased by an earlier fusion (a variance reduction) has no parent.
        if not isinstance(op, nn.ReduceMeanOp) or op.parent is None:
            continue
        match = match_layer_norm(op)
        if match is None:
            continue
        name = _fused_name(match, taken)
        taken.add(name)
        fused.append(fuse(match, name))
    return fused


@dataclass(frozen=True)
class LayerNormFusePass(ModulePass):
    """Fuse written-out LayerNorms (reduce_mean, sub, pow, ..., mul, add) into
    `nn.layer_norm` ops; see the module docstring for what matches exactly."""

    name = "layernorm-fuse"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        fuse_layer_norms(op)
