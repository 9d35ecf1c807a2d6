"""`fuse-bn`: fold inference batch norms into the conv / conv_transpose / gemm / matmul
before them, or rewrite them as a per-channel multiply-add.

A batch norm computes y = x * k + s per channel (axis 1), k = scale / sqrt(var + eps),
s = bias - mean * k. It folds into its producer P when P is a conv, conv_transpose,
gemm or matmul whose output the batch norm alone reads, P applies no activation of
its own, and P's weight and bias (if any) and the batch-norm parameters are all
`nn.constant`s:

* conv: weight * k along axis 0 (output channels), bias b * k + s (bias added if
  there was none);
* conv_transpose: weight (I, O/group, ...) * k of output channel g * O/group + j for
  input channel i of group g, axis 1 within each group; bias as for conv;
* gemm (output (M, N)): B * k along N (axis 0 if trans_b, else 1);
  C becomes k * (beta * C) + s, beta 1 (C added if there was none);
* matmul with a 2-d output and a 2-d constant rhs (K, N): rhs * k along its last axis,
  then an `nn.add` of s (named after the batch norm) takes the batch norm's place.

Names: the fused op keeps its `onnx_name`. A new weight / bias constant keeps the name
of the constant it replaces (while nothing else reads that one); a new bias is named
`<weight name without .weight>.bias` (PyTorch's and AIMET's name for the parameter),
or `<op name>.bias` for a weight not named `*.weight`. The result keeps the batch
norm's SSA name and calibrated range.

Any other batch norm with constant parameters becomes `nn.mul` by `<bn name>.scale`
and `nn.add` of `<bn name>.shift` (constants shaped (C, 1, ..., 1) for NC... inputs;
the mul is named `<bn name>.mul`, the add keeps the batch norm's name). Each batch
norm not folded into its producer is reported with the reason, one QuantirWarning
line each (`fuse-bn: batch norm '<name>' ...`); `fuse_batch_norms` returns the lines.

Computed in float64 and stored in the weights' dtype: the folded function differs
from the separate batch norm by float32 rounding only (about 1e-7 relative).

Statistics: a folded batch norm leaves its beta (`bias`) and gamma (`scale`) on the op
now producing its output (the fused conv / conv_transpose / gemm, or the matmul's
`nn.add`), as `quantir.bn_stats = {beta = array<f64: ...>, gamma = array<f64: ...>}`:
that output is, per channel, roughly normal with mean beta and standard deviation
|gamma| (Nagel et al. 2019, "Data-Free Quantization"). `cle` keeps them in step with
the weights it rescales and uses them for high-bias absorption; `bias-correction
{mode=analytic}` estimates the mean input of the next layer from them. Read and write
them with `bn_stats` / `set_bn_stats`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import DenseArrayBase, DictionaryAttr, ModuleOp, f64
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.passes import ModulePass

from quantir.dialects import nn
from quantir.passes.constants import (
    constant_value,
    erase,
    erase_unused,
    new_constant,
    node_label,
    replacement_name,
    report,
    take_over,
    user_count,
)

FOLDABLE = (nn.ConvOp, nn.ConvTransposeOp, nn.GemmOp, nn.MatMulOp)
BN_STATS_KEY = "quantir.bn_stats"


@dataclass(frozen=True)
class FuseBatchNormPass(ModulePass):
    """Fold each batch norm into the conv / conv_transpose / gemm / matmul before it, or
    make it a per-channel mul + add; warn once per batch norm not folded."""

    name = "fuse-bn"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        report(self.name, fuse_batch_norms(op))


@dataclass(frozen=True)
class _Affine:
    """A batch norm as y = x * k + s per channel (float64), and its beta and gamma."""

    k: np.ndarray
    s: np.ndarray
    beta: np.ndarray
    gamma: np.ndarray


def set_bn_stats(op: Operation, beta: np.ndarray, gamma: np.ndarray) -> None:
    """Record that `op`'s output channel c is about N(beta[c], gamma[c]^2)."""
    op.attributes[BN_STATS_KEY] = DictionaryAttr({
        "beta": DenseArrayBase.from_list(f64, [float(v) for v in np.ravel(beta)]),
        "gamma": DenseArrayBase.from_list(f64, [float(v) for v in np.ravel(gamma)])})


def bn_stats(op: Operation) -> tuple[np.ndarray, np.ndarray] | None:
    """(beta, gamma) per output channel of `op` (float64), or None if it has none."""
    attr = op.attributes.get(BN_STATS_KEY)
    if not isinstance(attr, DictionaryAttr):
        return None
    beta, gamma = attr.data.get("beta"), attr.data.get("gamma")
    if not isinstance(beta, DenseArrayBase) or not isinstance(gamma, DenseArrayBase):
        return None
    return (np.array(beta.get_values(), dtype=np.float64),
            np.array(gamma.get_values(), dtype=np.float64))


def fuse_batch_norms(root: Operation) -> list[str]:
    """Rewrite every batch norm under `root`; one line per batch norm not folded into its
    producer (rewritten as mul + add, or left as it is), saying why."""
    skipped = []
    for bn in [op for op in root.walk() if isinstance(op, nn.BatchNormOp)]:
        label = f"batch norm '{bn.node_name}'"
        params = [constant_value(v) for v in bn.operands[1:]]
        if any(p is None for p in params):
            skipped.append(f"{label} left as it is: its scale, bias, mean and variance are "
                           "not all nn.constants")
            continue
        scale, bias, mean, var = (p.astype(np.float64) for p in params)  # type: ignore[union-attr]
        k = scale / np.sqrt(var + bn.props.float("epsilon"))
        affine = _Affine(k, bias - mean * k, bias, scale)
        reason = _fold(bn, affine)
        if reason is not None:
            _as_mul_add(bn, affine)
            skipped.append(f"{label} not folded into {node_label(bn.operands[0])}: {reason}; "
                           "rewritten as a per-channel mul + add")
    return skipped


def _fold(bn: nn.BatchNormOp, affine: _Affine) -> str | None:
    """Fold `bn` into its producer; the reason it cannot (nothing changed then)."""
    value = bn.operands[0]
    producer = value.owner
    if not isinstance(producer, FOLDABLE):
        return "it is not a conv, conv_transpose, gemm or matmul"
    if user_count(value) != 1:
        return f"its output has {user_count(value)} users"
    if producer.props.has("activation"):
        return f"it applies activation {producer.props.str('activation')} first"
    weight_value = producer.operands[1]
    weight = constant_value(weight_value)
    if weight is None:
        return "its weight is not an nn.constant"
    if isinstance(producer, nn.MatMulOp):
        return _fold_matmul(bn, producer, weight, affine)
    extra = producer.operands[2] if len(producer.operands) == 3 else None
    old_bias = None if extra is None else constant_value(extra)
    if extra is not None and old_bias is None:
        return f"its {'C' if isinstance(producer, nn.GemmOp) else 'bias'} is not an nn.constant"
    properties = _own_properties(producer)
    if isinstance(producer, nn.GemmOp):
        axis = 0 if producer.props.int("trans_b") else 1
        factor = affine.k.reshape([-1 if a == axis else 1 for a in range(2)])
        beta = producer.props.float("beta")
        new_bias = affine.s if old_bias is None else affine.k * (beta * old_bias) + affine.s
        properties["beta"] = nn.float_attr(1.0)
    else:
        factor = _conv_factor(producer, weight.shape, affine.k)
        new_bias = affine.s if old_bias is None else affine.k * old_bias + affine.s
    new_weight = new_constant((weight * factor).astype(weight.dtype),
                              replacement_name(weight_value, f"{producer.node_name}.weight"))
    bias_name = _bias_name(producer, weight_value)
    if extra is not None:
        bias_name = replacement_name(extra, bias_name)
    bias = new_constant(new_bias.astype(weight.dtype), bias_name)
    fused = type(producer).build_from([producer.operands[0], new_weight.results[0],
                                       bias.results[0]], properties, producer.node_name)
    set_bn_stats(fused, affine.beta, affine.gamma)
    _replace(bn, producer, [new_weight, bias, fused], fused.results[0])
    return None


def _conv_factor(producer: nn.ConvOp | nn.ConvTransposeOp, shape: tuple[int, ...],
                 k: np.ndarray) -> np.ndarray:
    """k laid out on the weight: per output channel, which is axis 0 of a conv weight
    and, for conv_transpose (I, O/group, ...), (group of input channel i, axis 1)."""
    tail = [1] * (len(shape) - 2)
    if isinstance(producer, nn.ConvOp):
        return k.reshape(-1, 1, *tail)
    group = producer.props.int("group")
    per_group = k.reshape(group, shape[1])
    return per_group[np.arange(shape[0]) // (shape[0] // group)].reshape(*shape[:2], *tail)


def _fold_matmul(bn: nn.BatchNormOp, producer: nn.MatMulOp, weight: np.ndarray,
                 affine: _Affine) -> str | None:
    # The batch norm's channel axis (1) is the rhs's last axis only for (M, N) outputs.
    if weight.ndim != 2 or len(bn.operands[0].type.get_shape()) != 2:  # type: ignore[attr-defined]
        return "only a matmul with a 2-d output and a 2-d constant rhs folds"
    weight_value = producer.operands[1]
    new_weight = new_constant((weight * affine.k).astype(weight.dtype),
                              replacement_name(weight_value, f"{producer.node_name}.weight"))
    fused = nn.MatMulOp.build_from([producer.operands[0], new_weight.results[0]],
                                   _own_properties(producer), producer.node_name)
    fused.results[0].name_hint = producer.results[0].name_hint
    bias = new_constant(affine.s.astype(weight.dtype), _bias_name(producer, weight_value))
    add = nn.AddOp.build_from([fused.results[0], bias.results[0]], {}, bn.node_name)
    set_bn_stats(add, affine.beta, affine.gamma)
    _replace(bn, producer, [new_weight, fused, bias, add], add.results[0])
    return None


def _own_properties(op: nn.NNOperation) -> dict[str, Attribute]:
    """The properties to rebuild `op` with (`build_from` adds the name)."""
    return {key: attr for key, attr in op.properties.items() if key != "onnx_name"}


def _bias_name(producer: nn.NNOperation, weight: SSAValue) -> str:
    owner = weight.owner
    if isinstance(owner, nn.ConstantOp) and owner.node_name.endswith(".weight"):
        return owner.node_name.removesuffix(".weight") + ".bias"
    return f"{producer.node_name}.bias"


def _replace(bn: nn.BatchNormOp, producer: Operation, new_ops: list[Operation],
             result: SSAValue) -> None:
    """The new ops stand where `producer` stood; `result` takes over the batch norm's."""
    block = producer.parent_block()
    assert block is not None
    block.insert_ops_before(new_ops, producer)
    dead = [operand.owner for operand in (*bn.operands, *producer.operands)]
    take_over(result, bn)
    erase(producer)
    erase_unused(o for o in dead if isinstance(o, Operation))


def _as_mul_add(bn: nn.BatchNormOp, affine: _Affine) -> None:
    """bn -> x * scale + shift, the constants shaped (C, 1, ..., 1) to broadcast on axis 1."""
    x = bn.operands[0]
    rank = len(x.type.get_shape())  # type: ignore[attr-defined]
    dtype = constant_value(bn.operands[1]).dtype  # type: ignore[union-attr]
    shape = (-1, *([1] * (rank - 2)))
    name = bn.node_name
    scale = new_constant(affine.k.reshape(shape).astype(dtype), f"{name}.scale")
    shift = new_constant(affine.s.reshape(shape).astype(dtype), f"{name}.shift")
    mul = nn.MulOp.build_from([x, scale.results[0]], {}, f"{name}.mul")
    add = nn.AddOp.build_from([mul.results[0], shift.results[0]], {}, name)
    block = bn.parent_block()
    assert block is not None
    block.insert_ops_before([scale, mul, shift, add], bn)
    dead = [operand.owner for operand in bn.operands[1:]]
    take_over(add.results[0], bn)
    erase_unused(o for o in dead if isinstance(o, Operation))
