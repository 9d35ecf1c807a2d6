"""Execution-time fusion for float runs that nobody observes.

onnxruntime folds BatchNormalization into the convolution before it and applies
activations in place; so does the fast plan here. It changes no IR: the module
stays as imported, and a run with an observer (calibration, debugging) uses the
exact one-step-per-op plan, since fused steps never materialise the intermediate
tensors. Folded weights round differently from a separate batch norm (about 1e-7
relative), as in onnxruntime.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.ir import Operation, SSAValue

from quantir.dialects import nn

Kernel = Callable[..., tuple[np.ndarray, ...]]

# Ops whose kernels always return a new array that nothing else references, so an
# activation may overwrite it (views from reshape / slice / transpose never qualify).
FRESH_OUTPUT_OPS = (nn.ConvOp, nn.GemmOp, nn.MatMulOp, nn.BatchNormOp, nn.AddOp, nn.SubOp,
                    nn.MulOp, nn.DivOp)


@dataclass
class PlannedStep:
    op: Operation  # the op named in errors (the last one fused into the step)
    kernel: Kernel
    inputs: list[SSAValue]
    outputs: list[SSAValue]
    ops: tuple[Operation, ...]  # every op the step computes, in order


def plan_steps(ops: Sequence[Operation], compile_kernel: Callable[[Operation], Kernel],
               constant: Callable[[Operation], np.ndarray], fuse: bool) -> list[PlannedStep]:
    """One step per op, or with `fuse`, conv + batch norm + activation in one step."""
    steps: list[PlannedStep] = []
    producer: dict[SSAValue, PlannedStep] = {}
    for op in ops:
        step = None
        if fuse:
            step = _fold_batch_norm(op, producer, compile_kernel, constant) \
                or _fuse_activation(op, producer)
        if step is None:
            step = PlannedStep(op, compile_kernel(op), list(op.operands), list(op.results), (op,))
            steps.append(step)
        for result in step.outputs:
            producer[result] = step
    return steps


def _sole_user(value: SSAValue, user: Operation) -> bool:
    uses = list(value.uses)
    return len(uses) == 1 and uses[0].operation is user


def _constant_owner(value: SSAValue) -> nn.ConstantOp | None:
    owner = value.owner
    return owner if isinstance(owner, nn.ConstantOp) else None


def _fold_batch_norm(op: Operation, producer: dict[SSAValue, PlannedStep],
                     compile_kernel: Callable[[Operation], Kernel],
                     constant: Callable[[Operation], np.ndarray]) -> PlannedStep | None:
    """conv (constant weights) -> batch_norm (constant parameters): one conv step."""
    if not isinstance(op, nn.BatchNormOp):
        return None
    step = producer.get(op.operands[0])
    if step is None or len(step.ops) != 1 or not isinstance(step.ops[0], nn.ConvOp):
        return None
    conv = step.ops[0]
    if not _sole_user(conv.results[0], op):
        return None
    owners = [_constant_owner(v) for v in (*conv.operands[1:], *op.operands[1:])]
    if any(owner is None for owner in owners):
        return None
    weight, *rest = [constant(owner) for owner in owners]  # type: ignore[arg-type]
    bias = rest[0] if len(conv.operands) == 3 else None
    scale, shift, mean, var = rest[-4:]
    factor = scale.astype(np.float32) / np.sqrt(var.astype(np.float32)
                                                + np.float32(op.props.float("epsilon")))
    folded_weight = (weight * factor.reshape(-1, *([1] * (weight.ndim - 1)))).astype(np.float32)
    base = bias if bias is not None else np.zeros_like(factor)
    folded_bias = ((base - mean) * factor + shift).astype(np.float32)
    for array in (folded_weight, folded_bias):
        array.flags.writeable = False  # lets the conv kernel cache its weight layout
    conv_kernel = compile_kernel(conv)

    def conv_batch_norm(x: np.ndarray) -> tuple[np.ndarray, ...]:
        return conv_kernel(x, folded_weight, folded_bias)

    step.kernel = conv_batch_norm
    step.inputs = [conv.operands[0]]
    step.outputs = list(op.results)
    step.op = op
    step.ops = (conv, op)
    return step


def _fuse_activation(op: Operation, producer: dict[SSAValue, PlannedStep]) -> PlannedStep | None:
    """producer -> relu / clip / hard_swish: the activation overwrites the fresh output."""
    from quantir.runtime.float_kernels import compile_inplace

    if not isinstance(op, nn.ReluOp | nn.ClipOp | nn.HardSwishOp):
        return None
    step = producer.get(op.operands[0])
    if step is None or len(step.outputs) != 1 or not isinstance(step.ops[-1], FRESH_OUTPUT_OPS):
        return None
    if not _sole_user(op.operands[0], op):
        return None
    activation = compile_inplace(op)
    if activation is None:
        return None
    inner = step.kernel

    def with_activation(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        (result,) = inner(*arrays)
        if not result.flags.writeable or result.dtype != np.float32:
            result = np.array(result, dtype=np.float32)
        activation(result)
        return (result,)

    step.kernel = with_activation
    step.outputs = list(op.results)
    step.op = op
    step.ops = (*step.ops, op)
    return step
