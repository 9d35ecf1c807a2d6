"""What the graph-rewriting passes share (fuse-bn, fuse-activation): constant operands
as arrays, single users, an op taking over another's result, and the one-line reports
of what a pass left alone.

A pass that rewrites a pattern in place of the op ending it gives the new result the
old one's uses, SSA name and calibrated range (`take_over`), so the printed IR after
it reads as before and a module calibrated before the pass keeps its ranges.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable

import numpy as np
from xdsl.ir import Operation, SSAValue

from quantir.dialects import nn
from quantir.ir import dense_of, is_elided
from quantir.passes.ranges import RESULTS_KEY
from quantir.runtime.executor import constant_array


def constant_value(value: SSAValue) -> np.ndarray | None:
    """The array of an `nn.constant` result; None for a computed value or a constant
    whose data was elided when the module was printed."""
    owner = value.owner
    if not isinstance(owner, nn.ConstantOp) or is_elided(owner.value):
        return None
    return constant_array(owner)


def user_count(value: SSAValue) -> int:
    """How many operands read `value` (an op reading it twice counts twice)."""
    return len(list(value.uses))


def sole_user(value: SSAValue) -> Operation | None:
    """The op reading `value` if it is its only use, else None."""
    uses = list(value.uses)
    return uses[0].operation if len(uses) == 1 else None


def node_label(value: SSAValue) -> str:
    """How a report names where a value comes from: its producer's node, or an argument."""
    owner = value.owner
    if isinstance(owner, nn.NNOperation):
        return f"{owner.name} '{owner.node_name}'"
    if isinstance(owner, Operation):
        return owner.name
    return f"function argument {value.name_hint or ''}".rstrip()


def new_constant(array: np.ndarray, name: str) -> nn.ConstantOp:
    """An `nn.constant` named `name`, its SSA value too (as the importer names weights)."""
    op = nn.ConstantOp.build_from([], {"value": dense_of(array)}, name)
    assert isinstance(op, nn.ConstantOp)
    # xDSL takes [A-Za-z_][\w$.]* as SSA names: other characters become _.
    hint = re.sub(r"[^\w$.]", "_", name)
    op.results[0].name_hint = hint if re.match(r"[A-Za-z_]", hint) else f"v{hint}"
    return op


def replacement_name(value: SSAValue, fallback: str) -> str:
    """The name for a constant replacing `value`'s constant: the same name while the old
    constant dies with the rewrite (one user), else `fallback` (it stays, shared)."""
    owner = value.owner
    if isinstance(owner, nn.ConstantOp) and user_count(value) == 1:
        return owner.node_name
    return fallback


def take_over(value: SSAValue, replaced: Operation) -> None:
    """`value` replaces the single result of `replaced`, which is erased: its uses, its
    SSA name and its calibrated range (none if it had none: a range observed before a
    rewrite describes the old value) move over."""
    old = replaced.results[0]
    old.replace_all_uses_with(value)
    if old.name_hint is not None:
        value.name_hint = old.name_hint
    owner = value.owner
    if isinstance(owner, Operation) and len(owner.results) == 1:
        if RESULTS_KEY in replaced.attributes:
            owner.attributes[RESULTS_KEY] = replaced.attributes[RESULTS_KEY]
        else:
            owner.attributes.pop(RESULTS_KEY, None)
    erase(replaced)


def erase(op: Operation) -> None:
    block = op.parent_block()
    assert block is not None, f"{op.name} is not in a block"
    block.erase_op(op)


def erase_unused(ops: Iterable[Operation]) -> None:
    """Erase the ops (the operands' owners of a rewritten op) nothing reads any more."""
    for op in dict.fromkeys(ops):  # ordered and without repeats
        if isinstance(op, nn.ConstantOp) and op.parent is not None \
                and not any(result.uses for result in op.results):
            erase(op)


def report(pass_name: str, lines: Iterable[str]) -> list[str]:
    """Warn (QuantirWarning) once per line, each `<pass>: <line>`; returns the lines."""
    from quantir.passes.qconfig import QuantirWarning

    lines = list(lines)
    for line in lines:
        warnings.warn(f"{pass_name}: {line}", QuantirWarning, stacklevel=3)
    return lines
