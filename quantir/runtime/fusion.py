"""Execution-time fusion for runs that nobody observes.

Float programs: onnxruntime folds BatchNormalization into the convolution before it
and applies the bias and the activation in the convolution's epilogue; so does the
fast plan here. Folded weights round differently from a separate batch norm (about
1e-7 relative), as in onnxruntime.

Integer programs: a qi.conv2d / qi.matmul and the chain of elementwise ops on its
result (q.requant, qi.clamp, qi.lookup, qi.add / sub / mul with a broadcast operand)
run as one step whose compiled epilogue writes only the last op's storage integers
(int_kernels.Chain); so do chains of elementwise ops alone. Integer fusion changes
no number: every stage computes what the op's own kernel computes.

It changes no IR: the module stays as imported, and a run with an observer
(calibration, debugging) uses the exact one-step-per-op plan, since fused steps
never materialise the intermediate tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from xdsl.dialects.builtin import f32
from xdsl.ir import Block, Operation, SSAValue

from quantir.dialects import nn

if TYPE_CHECKING:
    from quantir.runtime.int_kernels import Chain

Kernel = Callable[..., tuple[np.ndarray, ...]]

# Ops whose kernels always return a new array that nothing else references, so an
# activation may overwrite it (views from reshape / slice / transpose never qualify).
FRESH_OUTPUT_OPS = (nn.ConvOp, nn.GemmOp, nn.MatMulOp, nn.BatchNormOp, nn.AddOp, nn.SubOp,
                    nn.MulOp, nn.DivOp)
ACTIVATIONS = (nn.ReluOp, nn.ClipOp, nn.HardSwishOp)


@dataclass
class ConvParts:
    """A convolution step's pieces: the bias and activation run as its epilogue."""

    kernel: Kernel
    weight: np.ndarray
    bias: np.ndarray | None
    activation: Operation | None = None


@dataclass
class PlannedStep:
    op: Operation  # the op named in errors (the last one fused into the step)
    kernel: Kernel
    inputs: list[SSAValue]
    outputs: list[SSAValue]
    ops: tuple[Operation, ...]  # every op the step computes, in order
    conv: ConvParts | None = None
    chain: Chain | None = None  # an integer chain, compiled once the plan is complete


def plan_steps(ops: Sequence[Operation], compile_kernel: Callable[[Operation], Kernel],
               constant: Callable[[Operation], np.ndarray], fuse: bool) -> list[PlannedStep]:
    """One step per op, or with `fuse`, conv + batch norm + activation in one step and
    integer chains (see the module docstring) in one step."""
    from quantir.runtime.executor import default_kernel

    # Integer chains replace the ops' kernels by compiled ones: only for the default
    # kernels, which they compute exactly.
    chains = fuse and compile_kernel is default_kernel
    steps: list[PlannedStep] = []
    producer: dict[SSAValue, PlannedStep] = {}
    for op in ops:
        # A batch norm, activation or elementwise integer op joins its producer's step
        # (wherever that stands: the producer's result has no other reader, so nothing
        # in between needs it).
        step = None
        if fuse:
            step = _fold_batch_norm(op, producer, constant) or _fuse_activation(op, producer)
        if step is None and chains:
            step = _join_chain(op, producer)
            if step is not None and steps[-1] is not step:
                # The chain now ends at this op: its step moves here, after the steps
                # that compute this op's other operands. Nothing in between reads the
                # chain's values (each had this chain as its only reader).
                steps.remove(step)
                steps.append(step)
        if step is None:
            if fuse:
                step = _conv_step(op, compile_kernel, constant)
            if step is None and chains:
                step = _chain_step(op, constant)
            if step is None:
                step = PlannedStep(op, compile_kernel(op), list(op.operands), list(op.results),
                                   (op,))
            steps.append(step)
        for result in step.outputs:
            producer[result] = step
    for step in steps:
        if step.chain is not None:
            step.kernel, step.inputs = step.chain.compile()
    return steps


def _chain_step(op: Operation, constant: Callable[[Operation], np.ndarray]) \
        -> PlannedStep | None:
    """A step headed by an integer product or elementwise op (its kernel comes later)."""
    from quantir.runtime.int_kernels import Chain

    chain = Chain.start(op, constant)
    if chain is None:
        return None
    return PlannedStep(op, _not_compiled, list(chain.inputs), list(op.results), (op,),
                       chain=chain)


def _not_compiled(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    raise AssertionError("an integer chain step runs before its kernel was compiled")


def _join_chain(op: Operation, producer: dict[SSAValue, PlannedStep]) -> PlannedStep | None:
    """An elementwise integer op on a chain step's only-read result joins the chain."""
    if not op.operands:
        return None
    for value in op.operands:
        step = producer.get(value)
        if step is None or step.chain is None or step.chain.value is not value \
                or not _sole_user(value, op):
            continue
        # The other operands exist when the step runs: it moves to this op's place.
        if step.chain.join(op):
            step.outputs, step.op, step.ops = list(op.results), op, (*step.ops, op)
            step.inputs = list(step.chain.inputs)
            return step
    return None


def _sole_user(value: SSAValue, user: Operation) -> bool:
    uses = list(value.uses)
    return len(uses) == 1 and uses[0].operation is user


def _constant_owner(value: SSAValue) -> nn.ConstantOp | None:
    owner = value.owner
    return owner if isinstance(owner, nn.ConstantOp) else None


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False  # lets the conv kernel cache its weight layout
    return array


def _conv_step(op: Operation, compile_kernel: Callable[[Operation], Kernel],
               constant: Callable[[Operation], np.ndarray]) -> PlannedStep | None:
    """A float32 conv with constant weights, its bias moved to the epilogue (and the
    activation it carries from fuse-activation, which must follow the bias)."""
    from quantir.runtime.float_kernels import compile_epilogue

    if not isinstance(op, nn.ConvOp) or op.results[0].type.element_type != f32:
        return None
    owners = [_constant_owner(v) for v in op.operands[1:]]
    if any(owner is None for owner in owners):
        return None
    activation = op.activation_op()
    kernel_op: Operation = op
    if activation is not None:
        if compile_epilogue(activation, None) is None:
            return None  # no epilogue form (HardSigmoid): the op's own kernel applies it
        kernel_op = _without_activation(op)
    weight, *bias = [constant(owner) for owner in owners]  # type: ignore[arg-type]
    parts = ConvParts(compile_kernel(kernel_op), weight, bias[0] if bias else None, activation)
    step = PlannedStep(op, _conv_kernel(parts), [op.operands[0]], list(op.results), (op,), parts)
    return step


def _without_activation(op: nn.ConvOp) -> nn.ConvOp:
    """A detached copy of the conv without its fused activation (on block arguments, so
    the module's use lists stay untouched): the kernel of the bare convolution."""
    block = Block(arg_types=[operand.type for operand in op.operands])
    dropped = {"onnx_name", "activation", *nn.ACTIVATION_PARAMETERS}
    properties = {key: value for key, value in op.properties.items() if key not in dropped}
    copy = nn.ConvOp.build_from(list(block.args), properties, op.node_name)
    assert isinstance(copy, nn.ConvOp)
    return copy


def _conv_kernel(parts: ConvParts) -> Kernel:
    from quantir.runtime.float_kernels import compile_epilogue

    epilogue = compile_epilogue(parts.activation, parts.bias)
    assert epilogue is not None
    conv, weight = parts.kernel, parts.weight

    def conv_with_epilogue(x: np.ndarray) -> tuple[np.ndarray, ...]:
        (y,) = conv(x, weight)
        if not (y.flags.writeable and y.flags.c_contiguous):
            y = np.array(y, dtype=np.float32)
        epilogue(y)
        return (y,)

    return conv_with_epilogue


def _fold_batch_norm(op: Operation, producer: dict[SSAValue, PlannedStep],
                     constant: Callable[[Operation], np.ndarray]) -> PlannedStep | None:
    """conv -> batch_norm (constant parameters): the batch norm folds into the conv."""
    if not isinstance(op, nn.BatchNormOp):
        return None
    step = producer.get(op.operands[0])
    # A conv that already applies an activation cannot take a batch norm after it.
    if step is None or step.conv is None or len(step.ops) != 1 \
            or step.conv.activation is not None or not _sole_user(op.operands[0], op):
        return None
    owners = [_constant_owner(v) for v in op.operands[1:]]
    if any(owner is None for owner in owners):
        return None
    scale, shift, mean, var = [constant(owner) for owner in owners]  # type: ignore[arg-type]
    parts = step.conv
    factor = scale.astype(np.float32) / np.sqrt(var.astype(np.float32)
                                                + np.float32(op.props.float("epsilon")))
    parts.weight = _read_only((parts.weight * factor.reshape(-1, *([1] * (parts.weight.ndim - 1))))
                              .astype(np.float32))
    base = parts.bias if parts.bias is not None else np.zeros_like(factor)
    parts.bias = ((base - mean) * factor + shift).astype(np.float32)
    step.kernel = _conv_kernel(parts)
    step.outputs, step.op, step.ops = list(op.results), op, (*step.ops, op)
    return step


def _fuse_activation(op: Operation, producer: dict[SSAValue, PlannedStep]) -> PlannedStep | None:
    """producer -> relu / clip / hard_swish: the activation overwrites the fresh output."""
    from quantir.runtime.float_kernels import compile_epilogue

    if not isinstance(op, ACTIVATIONS):
        return None
    step = producer.get(op.operands[0])
    if step is None or len(step.outputs) != 1 or not isinstance(step.ops[-1], FRESH_OUTPUT_OPS) \
            or not _sole_user(op.operands[0], op):
        return None
    # A conv whose epilogue already holds an activation (a fused one, or one joined
    # here) keeps it; this second activation then runs after the whole step.
    if step.conv is not None and step.conv.activation is None:
        step.conv.activation = op
        step.kernel = _conv_kernel(step.conv)
    else:
        epilogue = compile_epilogue(op, None)
        if epilogue is None:
            return None
        inner = step.kernel

        def with_activation(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
            (result,) = inner(*arrays)
            if not (result.flags.writeable and result.flags.c_contiguous) \
                    or result.dtype != np.float32:
                result = np.array(result, dtype=np.float32)
            epilogue(result)
            return (result,)

        step.kernel = with_activation
    step.outputs, step.op, step.ops = list(op.results), op, (*step.ops, op)
    return step
