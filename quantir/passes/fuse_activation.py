"""`fuse-activation{hard-activations=false}`: an activation joins the op producing its
input, as that op's `activation` property (see `nn.FusedActivationOperation`).

Fused: `nn.relu` and `nn.clip` (ReLU6 and any other bounded clip) — and with
`hard-activations=true`, for targets whose layers apply them, `nn.hard_swish` and
`nn.hard_sigmoid` — when

* the producer is a conv, conv_transpose, gemm or matmul, or a residual `nn.add`
  (neither input an `nn.constant`: two computed tensors, such as a block's input and
  its last layer's output; an add of a constant is a bias, not a layer), and
* the producer's output has the activation as its only user, and
* the producer applies no activation yet.

The producer then computes the activation too (`activation = "relu"`; clip bounds in
`activation_min` / `activation_max`, hard_sigmoid's in `activation_alpha` /
`activation_beta`), and the quantizer sees one layer with one output encoding. The
fused result keeps the activation's SSA name and calibrated range; the producer keeps
its `onnx_name`. Each candidate activation left alone is reported with the reason,
one QuantirWarning line each (`fuse-activation: relu '<name>' ...`);
`fuse_activations` returns the lines.

Run `fold-constants` first where constant-only expressions feed an add, and `fuse-bn`
first where a batch norm stands between a conv and its activation.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass

from quantir.dialects import nn
from quantir.passes.constants import node_label, report, take_over, user_count

PRODUCERS = (nn.ConvOp, nn.ConvTransposeOp, nn.GemmOp, nn.MatMulOp, nn.AddOp)
ALWAYS = (nn.ReluOp, nn.ClipOp)
HARD = (nn.HardSwishOp, nn.HardSigmoidOp)


@dataclass(frozen=True)
class FuseActivationPass(ModulePass):
    """Fold Relu / Clip (and, with `hard-activations`, HardSwish / HardSigmoid) into the
    conv / conv_transpose / gemm / matmul / residual add producing their input; warn
    once per activation left alone."""

    name = "fuse-activation"

    hard_activations: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        report(self.name, fuse_activations(op, self.hard_activations))


def fuse_activations(root: Operation, hard_activations: bool = False) -> list[str]:
    """Fuse every candidate activation under `root` into its producer; one line per
    candidate left alone, saying why."""
    kinds = (*ALWAYS, *HARD) if hard_activations else ALWAYS
    skipped = []
    for activation in [op for op in root.walk() if isinstance(op, kinds)]:
        reason = _fuse(activation)
        if reason is not None:
            skipped.append(f"{activation.name.removeprefix('nn.')} '{activation.node_name}' "
                           f"not fused into {node_label(activation.operands[0])}: {reason}")
    return skipped


def _fuse(activation: nn.NNOperation) -> str | None:
    """Fuse `activation` into its producer; the reason it cannot (nothing changed then)."""
    value = activation.operands[0]
    producer = value.owner
    properties = nn.fused_activation_properties(activation)
    if properties is None:
        return "a clip without bounds is no activation"
    if not isinstance(producer, PRODUCERS):
        return "it is not a conv, conv_transpose, gemm, matmul or residual add"
    if isinstance(producer, nn.AddOp) and any(isinstance(operand.owner, nn.ConstantOp)
                                              for operand in producer.operands):
        return "it adds a constant (a bias, not a residual)"
    if producer.props.has("activation"):
        return f"it already applies activation {producer.props.str('activation')}"
    if user_count(value) != 1:
        return f"its output has {user_count(value)} users"
    producer.properties.update(properties)
    producer.verify_()
    take_over(value, activation)
    return None
