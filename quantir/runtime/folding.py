"""Evaluate nn ops on constants with the float kernels (import-time and pass folding)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from xdsl.ir import Block

from quantir.dialects import nn
from quantir.ir import tensor_type


def evaluate(op_class: type[nn.NNOperation], arrays: Sequence[np.ndarray],
             props: Mapping[str, object], name: str) -> tuple[np.ndarray, ...]:
    """The results of `op_class` with these properties applied to constant inputs."""
    from quantir.runtime.float_kernels import compile_kernel

    block = Block(arg_types=[tensor_type(a.shape, a.dtype) for a in arrays])
    op = op_class.build_from(list(block.args), props, name)
    return tuple(np.asarray(out) for out in compile_kernel(op)(*arrays))
