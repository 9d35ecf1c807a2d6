"""`fold-constants`: replace nn ops whose operands are all constants by their values."""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from quantir.dialects import nn
from quantir.ir import dense_of
from quantir.runtime.executor import constant_array
from quantir.runtime.folding import evaluate


@dataclass(frozen=True)
class FoldConstantsPass(ModulePass):
    """Fold every nn op computed only from `nn.constant`s (shape arithmetic, weight
    transposes, ...). `max-elements` bounds the size of a folded result, so a fold
    never turns a small expression into a large weight."""

    name = "fold-constants"

    max_elements: int = 1 << 24

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for candidate in list(op.walk()):
            if not isinstance(candidate, nn.NNOperation) or isinstance(candidate, nn.ConstantOp):
                continue
            owners = [operand.owner for operand in candidate.operands]
            if not owners or not all(isinstance(o, nn.ConstantOp) for o in owners):
                continue
            if any(r.type.element_count() > self.max_elements  # type: ignore[attr-defined]
                   for r in candidate.results):
                continue
            arrays = [constant_array(o) for o in owners]  # type: ignore[arg-type]
            values = evaluate(type(candidate), arrays, candidate.properties, candidate.node_name)
            names = [candidate.node_name if len(values) == 1 else f"{candidate.node_name}.{i}"
                     for i in range(len(values))]
            constants = [nn.ConstantOp.build_from([], {"value": dense_of(v)}, n)
                         for v, n in zip(values, names, strict=True)]
            block = candidate.parent_block()
            assert block is not None
            block.insert_ops_before(constants, candidate)
            for result, constant in zip(candidate.results, constants, strict=True):
                result.replace_all_uses_with(constant.results[0])
            block.erase_op(candidate)
            for owner in set(owners):
                if owner.parent is not None and not any(r.uses for r in owner.results):
                    owner.parent_block().erase_op(owner)  # type: ignore[union-attr]
