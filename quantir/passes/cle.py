"""`cle`: cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization").

For two layers in a row, y = W2 act(W1 x + b1), with act positive-homogeneous
(ReLU, identity), scaling output channel i of layer 1 by 1/s_i and input channel i
of layer 2 by s_i keeps the function and, with s_i = sqrt(r1_i / r2_i) (r = the
channel's weight range), gives both channels the range sqrt(r1_i r2_i). Chains
conv -> depthwise -> conv are equalized pair by pair, iterating until the scales
settle. Run it on the float module after `fuse-bn` (batch norms block it).

ReLU6 is where peers give up exactness: QNN turns it into ReLU. Here
`relu6=per-channel-clip` (the default) keeps the function exactly by clipping
channel i at 6 / s_i (a ReLU followed by `nn.min` with a per-channel bound), and
`relu6=relu` does what QNN does and says so. Any other activation between the
layers (HardSwish, ...) is not positive-homogeneous: that pair is skipped and
reported, as is a pair whose middle tensor has other users.

Batch-norm statistics (`quantir.bn_stats`, recorded by `fuse-bn`) follow the scaling:
the first layer's output channel i, scaled by 1/s_i, has beta_i / s_i and gamma_i / s_i.

High-bias absorption (`high-bias-absorption=true`, the default; Nagel et al. 2019,
section 4.2): after equalization, for a pair conv1 -> ReLU -> conv2 whose conv1 carries
batch-norm statistics, channel i of conv1's pre-activation h_i is about
N(beta_i, gamma_i^2); with c_i = max(0, beta_i - 3 |gamma_i|), conv1's bias loses c_i
and conv2's bias gains sum(W2[:, i]) c_i. Since ReLU(h) = ReLU(h - c) + c whenever
h >= c, the function is unchanged wherever h_i >= c_i, which the Gaussian model puts
at 99.87 % of the values; where h_i < c_i the output moves by at most
sum|W2[:, i]| (c_i - ReLU(h_i)). It is approximate in that sense, not exact. A clip
bound M / s_i (ReLU6, per channel after equalization) becomes M / s_i - c_i, with c_i at
most the bound. Skipped (and reported): pairs without statistics, without a ReLU
between the layers, and pairs whose conv2 pads its input (the zero padding would not
carry the absorbed c_i, so the border outputs would change).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from quantir.dialects import nn
from quantir.ir import array_of, dense_of
from quantir.passes.fuse_bn import bn_stats, set_bn_stats
from quantir.runtime.executor import main_function

SIGMAS = 3.0
"""High-bias absorption keeps c = beta - SIGMAS * |gamma| (the paper's 3 sigma)."""


class EqualizationReport(UserWarning):
    """What `cle` changed or could not change (one line each)."""


@dataclass
class _Pair:
    first: nn.ConvOp
    activation: Operation | None  # relu / clip between the layers, or None
    second: nn.ConvOp
    scales: np.ndarray = field(default_factory=lambda: np.ones(0))
    absorbed: np.ndarray | None = None  # c per channel of `first`, by high-bias absorption


@dataclass(frozen=True)
class CrossLayerEqualizationPass(ModulePass):
    name = "cle"

    relu6: str = "per-channel-clip"
    iterations: int = 20
    tolerance: float = 1e-4
    high_bias_absorption: bool = True

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.relu6 not in ("per-channel-clip", "relu"):
            from quantir.errors import PipelineError

            raise PipelineError(f"cle: relu6={self.relu6} is not per-channel-clip or relu")
        function = main_function(op)
        pairs = [pair for conv in function.body.block.ops if isinstance(conv, nn.ConvOp)
                 if (pair := self.pair_after(conv)) is not None]
        if not pairs:
            return
        weights = {conv: _weight(conv).astype(np.float64)
                   for pair in pairs for conv in (pair.first, pair.second)}
        biases = {conv: _bias(conv) for conv in weights}
        for pair in pairs:
            pair.scales = np.ones(weights[pair.first].shape[0])
        # Pairs share layers (conv -> depthwise -> conv): iterate until the scales settle.
        for _ in range(self.iterations):
            largest = 0.0
            for pair in pairs:
                r1 = _output_ranges(weights[pair.first])
                r2 = _input_ranges(weights[pair.second], pair.second)
                scales = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.maximum(r2, 1e-300)), 1.0)
                _scale_output(weights[pair.first], biases[pair.first], 1 / scales)
                _scale_input(weights[pair.second], pair.second, scales)
                pair.scales = pair.scales * scales
                largest = max(largest, float(np.max(np.abs(np.log(scales)))))
            if largest < self.tolerance:
                break
        for pair in pairs:
            stats = bn_stats(pair.first)
            if stats is not None:
                set_bn_stats(pair.first, stats[0] / pair.scales, stats[1] / pair.scales)
        absorbed = []
        if self.high_bias_absorption:
            without = [pair for pair in pairs if bn_stats(pair.first) is None]
            if without:
                warnings.warn(f"cle: no high-bias absorption for {_listing(without)}: no "
                              "batch-norm statistics (quantir.bn_stats, which fuse-bn records)",
                              EqualizationReport, stacklevel=2)
            absorbed = [pair for pair in pairs if pair not in without
                        and self.absorb_high_bias(pair, weights, biases)]
        for conv, weight in weights.items():
            _replace_constant(conv, 1, weight)
            if biases[conv] is not None:
                _replace_constant(conv, 2, biases[conv])
        for pair in pairs:
            self.rescale_activation(pair)
        warnings.warn(f"cle: equalized {len(pairs)} layer pairs ({_listing(pairs)})",
                      EqualizationReport, stacklevel=2)
        for pair in absorbed:
            assert pair.absorbed is not None
            warnings.warn(f"cle: absorbed high biases of '{pair.first.node_name}' into "
                          f"'{pair.second.node_name}' ({int(np.count_nonzero(pair.absorbed))} "
                          f"channels, largest {float(pair.absorbed.max()):.4g})",
                          EqualizationReport, stacklevel=2)

    def absorb_high_bias(self, pair: _Pair, weights: dict[nn.ConvOp, np.ndarray],
                         biases: dict[nn.ConvOp, np.ndarray | None]) -> bool:
        """Move c = max(0, beta - 3 |gamma|) from the first layer's bias into the second's
        (see the module docstring); whether anything moved. Needs statistics; updates
        them, and reports a pair with something to absorb that it cannot take."""
        first, second = pair.first, pair.second
        stats = bn_stats(first)
        assert stats is not None
        beta, gamma = stats
        bound = _relu_bound(pair)
        absorbed = np.clip(beta - SIGMAS * np.abs(gamma), 0.0,
                           (math.inf if bound is None else bound) / pair.scales)
        if not np.any(absorbed > 0):
            return False
        why = None
        if bound is None:
            why = "no ReLU between the layers"
        elif any(second.props.ints("pads")):
            why = f"'{second.node_name}' pads its input"
        elif biases[first] is None:
            why = f"'{first.node_name}' has no bias"
        if why is not None:
            _no_absorption(pair, f"{why} ({int(np.count_nonzero(absorbed))} channels have "
                                 "beta > 3 |gamma|)")
            return False
        biases[first] -= absorbed  # type: ignore[operator]
        if biases[second] is None:
            biases[second] = np.zeros(weights[second].shape[0])
            _add_bias_operand(second)
        biases[second] += _absorbed_into(weights[second], second, absorbed)
        set_bn_stats(first, beta - absorbed, gamma)
        pair.absorbed = absorbed
        return True

    def pair_after(self, first: nn.ConvOp) -> _Pair | None:
        """The conv that follows `first` through at most one activation, if CLE applies."""
        if not _equalizable(first):
            return None
        fused = _fused(first)
        if fused not in (None, "relu"):
            # A fused clip bound would need the per-channel rewrite of a standalone one.
            self.skip(first, f"it applies activation {fused} itself; run cle before "
                             "fuse-activation")
            return None
        value: SSAValue = first.results[0]
        activation = None
        user = _sole_user(value)
        if isinstance(user, nn.ReluOp | nn.ClipOp):
            if isinstance(user, nn.ClipOp) and user.props.float("min", -math.inf) != 0.0:
                self.skip(first, f"its activation '{user.node_name}' clips below at "
                                 f"{user.props.float('min', -math.inf)}, not 0")
                return None
            activation, value = user, user.results[0]
            user = _sole_user(value)
        elif user is not None and not isinstance(user, nn.ConvOp):
            if isinstance(user, nn.HardSwishOp | nn.HardSigmoidOp | nn.SigmoidOp | nn.GeluOp
                          | nn.LeakyReluOp | nn.BatchNormOp):
                self.skip(first, f"'{user.node_name}' ({user.name}) is not positive-"
                                 "homogeneous, so scales cannot pass through it")
            return None
        if user is None:
            if len(list(value.uses)) > 1:
                self.skip(first, "its output has several users")
            return None
        if not isinstance(user, nn.ConvOp) or user.operands[0] is not value \
                or not _equalizable(user):
            return None
        channels = _weight(first).shape[0]
        second_group = user.props.int("group")
        if second_group not in (1, channels) or _weight(user).shape[1] * second_group != channels:
            return None
        return _Pair(first, activation, user)

    def skip(self, first: Operation, why: str) -> None:
        warnings.warn(f"cle: left '{getattr(first, 'node_name', first.name)}' alone: {why}",
                      EqualizationReport, stacklevel=3)

    def rescale_activation(self, pair: _Pair) -> None:
        """A clip with an upper bound M becomes relu + min(M / s_i), or plain ReLU."""
        clip = pair.activation
        if not isinstance(clip, nn.ClipOp) or not clip.props.has("max"):
            return
        bound = clip.props.float("max")
        block = clip.parent_block()
        assert block is not None
        relu = nn.ClipOp.build_from([clip.operands[0]], {"min": 0.0}, clip.node_name)
        block.insert_op_before(relu, clip)
        if self.relu6 == "relu":
            clip.results[0].replace_all_uses_with(relu.results[0])
            block.erase_op(clip)
            warnings.warn(f"cle: '{clip.node_name}' clipped at {bound:g}; it is now a ReLU "
                          "(relu6=relu), which changes the function", EqualizationReport,
                          stacklevel=3)
            return
        channels = pair.scales.shape[0]
        rank = len(clip.results[0].type.get_shape())  # type: ignore[attr-defined]
        per_channel = bound / pair.scales
        if pair.absorbed is not None:
            per_channel = per_channel - pair.absorbed
        bounds = per_channel.astype(np.float32).reshape(channels, *([1] * (rank - 2)))
        constant = nn.ConstantOp.build_from([], {"value": dense_of(bounds)},
                                            f"{clip.node_name}/per_channel_max")
        minimum = nn.MinOp.build_from([relu.results[0], constant.results[0]], {},
                                      f"{clip.node_name}/per_channel_max")
        block.insert_ops_before([constant, minimum], clip)
        clip.results[0].replace_all_uses_with(minimum.results[0])
        block.erase_op(clip)


def _listing(pairs: list[_Pair]) -> str:
    return ", ".join(f"{p.first.node_name} -> {p.second.node_name}" for p in pairs)


def _no_absorption(pair: _Pair, why: str) -> None:
    warnings.warn(f"cle: no high-bias absorption for {_listing([pair])}: {why}",
                  EqualizationReport, stacklevel=4)


def _relu_bound(pair: _Pair) -> float | None:
    """The upper clip bound of a ReLU-like activation between the layers (inf for a
    plain ReLU), or None if there is no such activation."""
    activation = pair.activation
    if isinstance(activation, nn.ReluOp) or (activation is None and _fused(pair.first) == "relu"):
        return math.inf
    if isinstance(activation, nn.ClipOp) and activation.props.float("min", -math.inf) == 0.0:
        return activation.props.float("max", math.inf)
    return None


def _absorbed_into(weight: np.ndarray, conv: nn.ConvOp, constant: np.ndarray) -> np.ndarray:
    """What `conv` (without padding) adds to each output for a constant `constant[i]` on
    input channel i: sum over i and the kernel of W[o, i] * constant[i] (for a
    depthwise conv, input channel o only)."""
    if conv.props.int("group") > 1:
        return weight.reshape(weight.shape[0], -1).sum(axis=1) * constant
    return weight.reshape(*weight.shape[:2], -1).sum(axis=2) @ constant


def _add_bias_operand(conv: nn.ConvOp) -> None:
    """Give a conv without bias a zero bias constant (its values are written later)."""
    channels = _weight(conv).shape[0]
    constant = nn.ConstantOp.build_from([], {"value": dense_of(np.zeros(channels, np.float32))},
                                        f"{conv.node_name}.bias")
    block = conv.parent_block()
    assert block is not None
    block.insert_op_before(constant, conv)
    conv.operands = [*conv.operands, constant.results[0]]


def _fused(conv: nn.ConvOp) -> str | None:
    """The activation `conv` applies itself (fuse-activation), if any."""
    return conv.props.str("activation") if conv.props.has("activation") else None


def _sole_user(value: SSAValue) -> Operation | None:
    uses = list(value.uses)
    return uses[0].operation if len(uses) == 1 else None


def _equalizable(conv: nn.ConvOp) -> bool:
    """2-d conv with constant weights (and bias), dense or depthwise."""
    owners = [operand.owner for operand in conv.operands[1:]]
    if not all(isinstance(owner, nn.ConstantOp) for owner in owners):
        return False
    weight = _weight(conv)
    group = conv.props.int("group")
    return weight.ndim == 4 and (group == 1 or weight.shape[1] == 1) \
        and conv.results[0].type.element_type == nn.f32  # type: ignore[attr-defined]


def _weight(conv: nn.ConvOp) -> np.ndarray:
    return np.array(array_of(conv.operands[1].owner.value))  # type: ignore[attr-defined]


def _bias(conv: nn.ConvOp) -> np.ndarray | None:
    if len(conv.operands) < 3:
        return None
    return np.array(array_of(conv.operands[2].owner.value), dtype=np.float64)  # type: ignore[attr-defined]


def _output_ranges(weight: np.ndarray) -> np.ndarray:
    return np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)


def _input_ranges(weight: np.ndarray, conv: nn.ConvOp) -> np.ndarray:
    """Per input channel of `conv` (a depthwise weight's channel i is input channel i)."""
    if conv.props.int("group") > 1:
        return np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)
    return np.abs(weight).transpose(1, 0, 2, 3).reshape(weight.shape[1], -1).max(axis=1)


def _scale_output(weight: np.ndarray, bias: np.ndarray | None, factors: np.ndarray) -> None:
    weight *= factors.reshape(-1, 1, 1, 1)
    if bias is not None:
        bias *= factors


def _scale_input(weight: np.ndarray, conv: nn.ConvOp, factors: np.ndarray) -> None:
    if conv.props.int("group") > 1:
        weight *= factors.reshape(-1, 1, 1, 1)
    else:
        weight *= factors.reshape(1, -1, 1, 1)


def _replace_constant(op: Operation, index: int, values: np.ndarray) -> None:
    """Give `op` a new constant operand (the old one may feed other ops)."""
    old = op.operands[index].owner
    assert isinstance(old, nn.ConstantOp)
    constant = nn.ConstantOp.build_from([], {"value": dense_of(values.astype(np.float32))},
                                        old.node_name)
    block = op.parent_block()
    assert block is not None
    block.insert_op_before(constant, op)
    op.operands[index] = constant.results[0]
    if not any(old.results[0].uses):
        old.parent_block().erase_op(old)  # type: ignore[union-attr]
