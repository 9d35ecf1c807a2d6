"""Compile a module's `@main` once into a plan, then run it on numpy arrays.

The plan is a list of steps in program order. Every SSA value gets a slot; a step
reads its input slots, writes its output slots and frees the slots it was the last
reader of, so peak memory follows the live tensors, not the whole graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, ModuleOp
from xdsl.ir import Operation, SSAValue

from quantir.dialects import nn, q
from quantir.errors import ModelError, QuantirError
from quantir.ir import array_of, is_elided

Kernel = Callable[..., tuple[np.ndarray, ...]]
Observer = Callable[[SSAValue, np.ndarray], None]
"""Called with every value the program computes (arguments included), in order."""


@dataclass(frozen=True)
class Step:
    op: Operation
    kernel: Kernel
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    frees: tuple[int, ...]


def main_function(module: ModuleOp) -> func.FuncOp:
    for op in module.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == "main":
            return op
    functions = [op for op in module.ops if isinstance(op, func.FuncOp)]
    if len(functions) == 1:
        return functions[0]
    raise ModelError("the module has no func.func @main to run")


def default_kernel(op: Operation) -> Kernel:
    """Integer kernels for the integer program (qi ops, q.requant, data movement on
    quantized tensors), fake-quantization kernels for the other q ops, float kernels
    for nn ops."""
    from quantir.runtime import int_kernels

    if int_kernels.is_integer_op(op):
        return int_kernels.compile_kernel(op)
    if op.name.startswith("q."):
        from quantir.runtime import q_kernels

        return q_kernels.compile_kernel(op)
    from quantir.runtime.float_kernels import compile_kernel

    return compile_kernel(op)


class Program:
    """An executable plan for one function.

    With `fuse`, conv + batch norm + activation chains run as one step (see
    fusion.py); the plan then cannot show the fused intermediates to an observer.
    """

    def __init__(self, function: func.FuncOp,
                 compile_kernel: Callable[[Operation], Kernel] = default_kernel,
                 fuse: bool = False):
        from quantir.runtime.fusion import plan_steps

        self.function = function
        self.fused = fuse
        slots: dict[SSAValue, int] = {}

        def slot(value: SSAValue) -> int:
            return slots.setdefault(value, len(slots))

        self.arguments = [slot(arg) for arg in function.body.block.args]
        self.constants: list[tuple[int, np.ndarray]] = []
        computed: list[Operation] = []
        self.results: list[int] = []
        arrays: dict[Operation, np.ndarray] = {}

        def constant(op: Operation) -> np.ndarray:
            if op not in arrays:
                assert isinstance(op, nn.ConstantOp | q.ConstantOp)
                arrays[op] = constant_array(op)
            return arrays[op]

        for op in function.body.block.ops:
            if isinstance(op, func.ReturnOp):
                self.results = [slot(v) for v in op.operands]
            elif isinstance(op, nn.ConstantOp | q.ConstantOp):
                self.constants.append((slot(op.results[0]), constant(op)))
            else:
                computed.append(op)
        planned = plan_steps(computed, compile_kernel, constant, fuse)
        steps = [(p.op, p.kernel, tuple(slot(v) for v in p.inputs),
                  tuple(slot(v) for v in p.outputs)) for p in planned]
        self.values = list(slots)
        last_read: dict[int, int] = {}
        for index, (_, _, ins, _) in enumerate(steps):
            for s in ins:
                last_read[s] = index
        kept = set(self.results) | {s for s, _ in self.constants}
        frees: list[list[int]] = [[] for _ in steps]
        for s, index in last_read.items():
            if s not in kept:
                frees[index].append(s)
        self.steps = [Step(op, kernel, ins, outs, tuple(frees[i]))
                      for i, (op, kernel, ins, outs) in enumerate(steps)]
        self.slot_count = len(slots)

    def run(self, inputs: Sequence[np.ndarray], observer: Observer | None = None) \
            -> list[np.ndarray]:
        if observer is not None and self.fused:
            raise ValueError("a fused program cannot observe every value; use fuse=False")
        env: list[np.ndarray | None] = [None] * self.slot_count
        for s, array in self.constants:
            env[s] = array
        for s, array in zip(self.arguments, inputs, strict=True):
            env[s] = array
            if observer is not None:
                observer(self.values[s], array)
        for step in self.steps:
            try:
                outputs = step.kernel(*[env[s] for s in step.inputs])
            except QuantirError:
                raise
            except (ValueError, FloatingPointError, IndexError) as error:
                name = getattr(step.op, "node_name", step.op.name)
                raise QuantirError(f"{step.op.name} '{name}': {error}") from error
            for s, array in zip(step.outputs, outputs, strict=True):
                env[s] = array
                if observer is not None:
                    observer(self.values[s], array)
            for s in step.frees:
                env[s] = None
        return [env[s] for s in self.results]  # type: ignore[misc]


def constant_array(op: nn.ConstantOp | q.ConstantOp) -> np.ndarray:
    value = op.value
    if is_elided(value):
        raise ModelError(f"constant '{op.node_name}' was elided when the module was printed; "
                         "print it again with --print-large-constants to run it")
    assert isinstance(value, DenseIntOrFPElementsAttr)
    return array_of(value)
