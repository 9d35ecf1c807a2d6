"""The `nn` dialect: the float graph, one op per ONNX operator.

Every op keeps the name of the ONNX node it came from (`onnx_name`) and carries its
attributes normalised by the importer: explicit pads, non-negative axes, static
shapes. Each op class states its operands and properties, and one `infer` class
method gives its result types from its operand types and properties. The importer
builds ops with `infer`; the verifier checks results against it, so a shape that
disagrees with an attribute is caught in both places by the same code.

Text form (all ops but `nn.constant`):

    %y = nn.conv %x, %w, %b {onnx_name = "conv1", strides = array<i64: 1, 1>, ...}
           : (tensor<1x1x8x8xf32>, tensor<8x1x3x3xf32>, tensor<8xf32>) -> tensor<1x8x8x8xf32>
"""

from __future__ import annotations

import math
from abc import ABC
from collections.abc import Mapping, Sequence
from typing import ClassVar

from xdsl.dialects.builtin import (
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DenseResourceAttr,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    f32,
    i1,
    i64,
)
from xdsl.ir import Attribute, Block, Dialect, Operation
from xdsl.irdl import (
    IRDLOperation,
    OptPropertyDef,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import ConstantLike, Pure
from xdsl.utils.exceptions import VerifyException

Shape = tuple[int, ...]

# --------------------------------------------------------------------------------------
# Property helpers: what the importer writes and every pass and kernel reads.
# --------------------------------------------------------------------------------------


def ints_attr(values: Sequence[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, [int(v) for v in values])


def floats_attr(values: Sequence[float]) -> DenseArrayBase:
    return DenseArrayBase.from_list(f32, [float(v) for v in values])


def int_attr(value: int) -> IntegerAttr:
    return IntegerAttr(int(value), i64)


def float_attr(value: float) -> FloatAttr:
    return FloatAttr(float(value), f32)


def to_attr(value: object) -> Attribute:
    """The property attribute for a plain Python value (as the importer writes them)."""
    if isinstance(value, Attribute):
        return value
    if isinstance(value, bool | int):
        return int_attr(int(value))
    if isinstance(value, float):
        return float_attr(value)
    if isinstance(value, str):
        return StringAttr(value)
    if isinstance(value, list | tuple):
        if all(isinstance(v, int) for v in value):
            return ints_attr(value)
        return floats_attr(value)
    raise TypeError(f"no property attribute for {value!r}")


class Props:
    """Typed read access to an op's properties (or to properties about to become one)."""

    def __init__(self, properties: Mapping[str, Attribute]):
        self.properties = properties

    def has(self, key: str) -> bool:
        return key in self.properties

    def ints(self, key: str) -> tuple[int, ...]:
        attr = self.properties[key]
        assert isinstance(attr, DenseArrayBase)
        return tuple(int(v) for v in attr.get_values())

    def floats(self, key: str) -> tuple[float, ...]:
        attr = self.properties[key]
        assert isinstance(attr, DenseArrayBase)
        return tuple(float(v) for v in attr.get_values())

    def int(self, key: str) -> int:
        attr = self.properties[key]
        assert isinstance(attr, IntegerAttr)
        return attr.value.data

    def float(self, key: str, default: float | None = None) -> float:
        if key not in self.properties and default is not None:
            return default
        attr = self.properties[key]
        assert isinstance(attr, FloatAttr)
        return attr.value.data

    def str(self, key: str) -> str:
        attr = self.properties[key]
        assert isinstance(attr, StringAttr)
        return attr.data


def _shape(type_: Attribute) -> Shape:
    if not isinstance(type_, TensorType):
        raise VerifyException(f"expected a ranked tensor, got {type_}")
    return tuple(type_.get_shape())


def _element(type_: Attribute) -> Attribute:
    assert isinstance(type_, TensorType)
    return type_.element_type


def _tensor(shape: Sequence[int], element: Attribute) -> TensorType:
    return TensorType(element, [int(d) for d in shape])


def broadcast_shapes(*shapes: Shape) -> Shape:
    """Numpy / ONNX multidirectional broadcasting."""
    rank = max(len(s) for s in shapes)
    result = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise VerifyException(f"shapes {', '.join(map(str, shapes))} do not broadcast")
        result.append(dims.pop() if dims else 1)
    return tuple(result)


def _check_axis(axis: int, rank: int, what: str = "axis") -> None:
    if not 0 <= axis < rank:
        raise VerifyException(f"{what} {axis} is outside the rank {rank} (normalised: 0..{rank - 1})")


def window_output_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int,
                       dilation: int = 1, ceil_mode: bool = False) -> int:
    """Output length of a sliding window (conv or pool) along one axis."""
    effective = dilation * (kernel - 1) + 1
    span = size + pad_begin + pad_end - effective
    if span < 0:
        raise VerifyException(f"window {effective} is larger than the padded input {size}")
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    # ONNX / PyTorch: the last window must start inside the input or the begin padding.
    if (out - 1) * stride >= size + pad_begin:
        out -= 1
    return out


# --------------------------------------------------------------------------------------
# Base classes
# --------------------------------------------------------------------------------------


class InferredOperation(IRDLOperation, ABC):
    """An op that keeps its ONNX node name and whose result types follow from `infer`
    (the base of the float `nn` ops and of the integer `qi` ops)."""

    onnx_name = prop_def(StringAttr)

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "operands attr-dict `:` functional-type(operands, results)"
    traits = traits_def(Pure())

    @classmethod
    def infer(cls, operand_types: Sequence[Attribute], props: Props) -> list[Attribute]:
        """Result types from operand types and properties; raises VerifyException."""
        raise NotImplementedError

    @classmethod
    def build_from(cls, operands: Sequence, properties: Mapping[str, object],
                   onnx_name: str) -> NNOperation:
        """Build the op with inferred result types (what the importer and passes use)."""
        props = {key: cls.property_attr(key, value) for key, value in properties.items()}
        props["onnx_name"] = StringAttr(onnx_name)
        result_types = cls.infer([operand.type for operand in operands], Props(props))
        return cls.create(operands=list(operands), result_types=result_types, properties=props)

    @classmethod
    def property_attr(cls, key: str, value: object) -> Attribute:
        """The attribute for a property value, a number coerced to the declared kind
        (so `alpha=1` becomes `1.0 : f32`, not an i64 the verifier rejects)."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            definition = cls.get_irdl_definition().properties.get(key)
            declared = getattr(getattr(definition, "constr", None), "attr", None)
            if declared is FloatAttr:
                return float_attr(float(value))
            if declared is IntegerAttr:
                return int_attr(int(value))
        return to_attr(value)

    @property
    def props(self) -> Props:
        return Props(self.properties)

    @property
    def node_name(self) -> str:
        return self.onnx_name.data

    def verify_(self) -> None:
        try:
            expected = type(self).infer([o.type for o in self.operands], self.props)
        except VerifyException as error:
            raise VerifyException(f"{self.name} '{self.node_name}': {error}") from error
        actual = [r.type for r in self.results]
        if list(expected) != actual:
            raise VerifyException(
                f"{self.name} '{self.node_name}': result types "
                f"{', '.join(map(str, actual))} do not match the inferred "
                f"{', '.join(map(str, expected))}")


class NNOperation(InferredOperation, ABC):
    """An op of the float graph."""


class UnaryOperation(NNOperation, ABC):
    """Elementwise on one float tensor: the result has the input's type."""

    input = operand_def(TensorType)
    output = result_def(TensorType)

    @classmethod
    def infer(cls, operand_types, props):
        cls.check_props(props)
        return [operand_types[0]]

    @classmethod
    def check_props(cls, props: Props) -> None:
        pass


class BinaryOperation(NNOperation, ABC):
    """Elementwise on two tensors with broadcasting."""

    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    output = result_def(TensorType)

    RESULT_IS_BOOL: ClassVar[bool] = False

    @classmethod
    def infer(cls, operand_types, props):
        lhs, rhs = operand_types
        if _element(lhs) != _element(rhs):
            raise VerifyException(f"operand element types differ: {_element(lhs)} and {_element(rhs)}")
        element = i1 if cls.RESULT_IS_BOOL else _element(lhs)
        return [_tensor(broadcast_shapes(_shape(lhs), _shape(rhs)), element)]


# --------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------


@irdl_op_definition
class ConstantOp(NNOperation):
    """A weight or folded value. `onnx_name` is the initializer's name."""

    name = "nn.constant"
    value = prop_def(DenseIntOrFPElementsAttr | DenseResourceAttr)
    output = result_def(TensorType)
    traits = traits_def(Pure(), ConstantLike())
    assembly_format = None

    # Text: `nn.constant dense<...> : tensor<...> {onnx_name = "w"}` (type printed once).
    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_attribute(self.value)
        printer.print_string(" ")
        printer.print_attr_dict({"onnx_name": self.onnx_name})

    @classmethod
    def parse(cls, parser: Parser) -> ConstantOp:
        value = parser.parse_attribute()
        if not isinstance(value, DenseIntOrFPElementsAttr | DenseResourceAttr):
            parser.raise_error("nn.constant expects a dense or dense_resource value")
        attrs = parser.parse_optional_attr_dict()
        properties = {"value": value, **attrs}
        return cls.create(result_types=[value.type], properties=properties)

    @classmethod
    def infer(cls, operand_types, props):
        value = props.properties["value"]
        assert isinstance(value, DenseIntOrFPElementsAttr | DenseResourceAttr)
        return [value.type]


# --------------------------------------------------------------------------------------
# Elementwise
# --------------------------------------------------------------------------------------


@irdl_op_definition
class ReluOp(UnaryOperation):
    name = "nn.relu"


@irdl_op_definition
class SigmoidOp(UnaryOperation):
    name = "nn.sigmoid"


@irdl_op_definition
class TanhOp(UnaryOperation):
    name = "nn.tanh"


@irdl_op_definition
class ErfOp(UnaryOperation):
    name = "nn.erf"


@irdl_op_definition
class SqrtOp(UnaryOperation):
    name = "nn.sqrt"


@irdl_op_definition
class ReciprocalOp(UnaryOperation):
    name = "nn.reciprocal"


@irdl_op_definition
class ExpOp(UnaryOperation):
    name = "nn.exp"


@irdl_op_definition
class NegOp(UnaryOperation):
    name = "nn.neg"


@irdl_op_definition
class HardSwishOp(UnaryOperation):
    name = "nn.hard_swish"


@irdl_op_definition
class LeakyReluOp(UnaryOperation):
    name = "nn.leaky_relu"
    alpha = prop_def(FloatAttr)


@irdl_op_definition
class HardSigmoidOp(UnaryOperation):
    name = "nn.hard_sigmoid"
    alpha = prop_def(FloatAttr)
    beta = prop_def(FloatAttr)


@irdl_op_definition
class GeluOp(UnaryOperation):
    """GELU; `approximate` is "none" (erf) or "tanh"."""

    name = "nn.gelu"
    approximate = prop_def(StringAttr)

    @classmethod
    def check_props(cls, props):
        if props.str("approximate") not in ("none", "tanh"):
            raise VerifyException(f"approximate must be none or tanh, got {props.str('approximate')}")


@irdl_op_definition
class ClipOp(UnaryOperation):
    """Clamp to [min, max]; an absent bound is unbounded."""

    name = "nn.clip"
    min = opt_prop_def(FloatAttr)
    max = opt_prop_def(FloatAttr)

    @classmethod
    def check_props(cls, props):
        low = props.float("min", -math.inf)
        high = props.float("max", math.inf)
        if low > high:
            raise VerifyException(f"min {low} is greater than max {high}")


@irdl_op_definition
class SoftmaxOp(UnaryOperation):
    """Softmax along one axis (opset-13 semantics; older exports are normalised)."""

    name = "nn.softmax"
    axis = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, operand_types, props):
        _check_axis(props.int("axis"), len(_shape(operand_types[0])))
        return [operand_types[0]]


@irdl_op_definition
class LRNOp(UnaryOperation):
    """Local response normalisation across channels (NCHW)."""

    name = "nn.lrn"
    size = prop_def(IntegerAttr)
    alpha = prop_def(FloatAttr)
    beta = prop_def(FloatAttr)
    bias = prop_def(FloatAttr)

    @classmethod
    def check_props(cls, props):
        if props.int("size") < 1:
            raise VerifyException("size must be at least 1")


@irdl_op_definition
class CastOp(NNOperation):
    """Element type conversion; the result type names the target type."""

    name = "nn.cast"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    to = prop_def(Attribute)

    @classmethod
    def infer(cls, operand_types, props):
        return [_tensor(_shape(operand_types[0]), props.properties["to"])]


# --------------------------------------------------------------------------------------
# Fused activations (set by the fuse-activation pass)
# --------------------------------------------------------------------------------------

ACTIVATION_KINDS: dict[str, tuple[type[UnaryOperation], dict[str, str]]] = {
    "relu": (ReluOp, {}),
    "clip": (ClipOp, {"activation_min": "min", "activation_max": "max"}),
    "hard_swish": (HardSwishOp, {}),
    "hard_sigmoid": (HardSigmoidOp, {"activation_alpha": "alpha", "activation_beta": "beta"}),
}
"""`activation` value -> the standalone op it stands for, and which `activation_*`
property carries which property of that op. The standalone op's definition decides
what is required (HardSigmoid's alpha and beta) and its `infer` what is valid (Clip's
min <= max), so a fused activation means exactly what the op it replaced meant."""

ACTIVATION_PARAMETERS = ("activation_min", "activation_max", "activation_alpha",
                         "activation_beta")


class FusedActivationOperation(NNOperation, ABC):
    """An op that may apply an activation to its own result (conv, conv_transpose,
    gemm, matmul, and the residual add): `activation` names it, `activation_*` carry
    its parameters. All optional: without them the op is the plain ONNX operator."""

    activation = opt_prop_def(StringAttr)
    activation_min = opt_prop_def(FloatAttr)
    activation_max = opt_prop_def(FloatAttr)
    activation_alpha = opt_prop_def(FloatAttr)
    activation_beta = opt_prop_def(FloatAttr)

    @classmethod
    def check_activation(cls, props: Props, result: Attribute) -> None:
        """Raise VerifyException unless the activation properties form one valid
        activation of a `result`-typed tensor (or are all absent)."""
        found = standalone_activation(props)
        if found is None:
            return
        op_class, properties = found
        kind = props.str("activation")
        carrier = {own: fused for fused, own in ACTIVATION_KINDS[kind][1].items()}
        missing = [carrier[name] for name, definition
                   in op_class.get_irdl_definition().properties.items()
                   if name in carrier and not isinstance(definition, OptPropertyDef)
                   and name not in properties]
        if missing:
            raise VerifyException(f"activation {kind} needs {' and '.join(missing)}")
        if op_class is ClipOp and not properties:
            raise VerifyException("activation clip needs activation_min or activation_max")
        op_class.infer([result], Props(properties))

    def activation_op(self) -> NNOperation | None:
        """The fused activation alone, as a detached op on a block argument of this op's
        result type (kernels compile it to reuse the standalone activation's code)."""
        found = standalone_activation(self.props)
        if found is None:
            return None
        op_class, properties = found
        block = Block(arg_types=[self.results[0].type])
        return op_class.build_from(list(block.args), properties, self.node_name)


def standalone_activation(props: Props) \
        -> tuple[type[UnaryOperation], dict[str, Attribute]] | None:
    """The (op class, properties) of the activation that `props` fuse, None without one;
    raises VerifyException for an unknown name or a parameter it does not take."""
    present = [name for name in ACTIVATION_PARAMETERS if props.has(name)]
    if not props.has("activation"):
        if present:
            raise VerifyException(f"{', '.join(present)} given without an activation")
        return None
    kind = props.str("activation")
    if kind not in ACTIVATION_KINDS:
        raise VerifyException(f"unknown activation {kind!r}; expected one of "
                              f"{', '.join(ACTIVATION_KINDS)}")
    op_class, names = ACTIVATION_KINDS[kind]
    stray = [name for name in present if name not in names]
    if stray:
        raise VerifyException(f"{', '.join(stray)} do not apply to activation {kind}")
    return op_class, {names[name]: props.properties[name] for name in present}


def fused_activation_properties(activation: Operation) -> dict[str, Attribute] | None:
    """The `activation*` properties standing for a standalone activation op, or None if
    no fused activation means the same (another op kind, or a clip without bounds)."""
    for kind, (op_class, names) in ACTIVATION_KINDS.items():
        if type(activation) is not op_class:
            continue
        properties: dict[str, Attribute] = {"activation": StringAttr(kind)}
        for fused, own in names.items():
            if own in activation.properties:
                properties[fused] = activation.properties[own]
        if op_class is ClipOp and len(properties) == 1:
            return None
        return properties
    return None


@irdl_op_definition
class AddOp(BinaryOperation, FusedActivationOperation):
    """Elementwise add; a residual add (two computed inputs) may carry the activation
    that follows it (fuse-activation), so the pair is one quantization layer."""

    name = "nn.add"

    @classmethod
    def infer(cls, operand_types, props):
        results = super().infer(operand_types, props)
        cls.check_activation(props, results[0])
        return results


@irdl_op_definition
class SubOp(BinaryOperation):
    name = "nn.sub"


@irdl_op_definition
class MulOp(BinaryOperation):
    name = "nn.mul"


@irdl_op_definition
class DivOp(BinaryOperation):
    name = "nn.div"


@irdl_op_definition
class PowOp(BinaryOperation):
    name = "nn.pow"


@irdl_op_definition
class MaxOp(BinaryOperation):
    name = "nn.max"


@irdl_op_definition
class MinOp(BinaryOperation):
    name = "nn.min"


@irdl_op_definition
class EqualOp(BinaryOperation):
    name = "nn.equal"
    RESULT_IS_BOOL: ClassVar[bool] = True


@irdl_op_definition
class PReluOp(NNOperation):
    """max(0, x) + slope * min(0, x); slope broadcasts to the input."""

    name = "nn.prelu"
    input = operand_def(TensorType)
    slope = operand_def(TensorType)
    output = result_def(TensorType)

    @classmethod
    def infer(cls, operand_types, props):
        x, slope = (_shape(t) for t in operand_types)
        if broadcast_shapes(x, slope) != x:
            raise VerifyException(f"slope {slope} does not broadcast to the input {x}")
        return [operand_types[0]]


@irdl_op_definition
class WhereOp(NNOperation):
    name = "nn.where"
    condition = operand_def(TensorType)
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    output = result_def(TensorType)

    @classmethod
    def infer(cls, operand_types, props):
        cond, lhs, rhs = operand_types
        if _element(cond) != i1:
            raise VerifyException(f"condition must be a tensor of i1, got {cond}")
        if _element(lhs) != _element(rhs):
            raise VerifyException("both branches must have one element type")
        return [_tensor(broadcast_shapes(_shape(cond), _shape(lhs), _shape(rhs)), _element(lhs))]


# --------------------------------------------------------------------------------------
# Convolution, normalisation, matrix products
# --------------------------------------------------------------------------------------


def _check_window_props(props: Props, spatial: int, with_dilations: bool = True) -> None:
    strides = props.ints("strides")
    pads = props.ints("pads")
    if len(strides) != spatial or any(s < 1 for s in strides):
        raise VerifyException(f"strides {strides} must be {spatial} positive integers")
    if len(pads) != 2 * spatial or any(p < 0 for p in pads):
        raise VerifyException(f"pads {pads} must be {2 * spatial} non-negative integers "
                              "(all begins, then all ends)")
    if with_dilations:
        dilations = props.ints("dilations")
        if len(dilations) != spatial or any(d < 1 for d in dilations):
            raise VerifyException(f"dilations {dilations} must be {spatial} positive integers")


@irdl_op_definition
class ConvOp(FusedActivationOperation):
    """N-d convolution, NC(spatial) layout, weights O x I/group x (kernel)."""

    name = "nn.conv"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    output = result_def(TensorType)
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)
    dilations = prop_def(DenseArrayBase)
    group = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, operand_types, props):
        x, w = _shape(operand_types[0]), _shape(operand_types[1])
        spatial = len(x) - 2
        if spatial < 1 or len(w) != len(x):
            raise VerifyException(f"input {x} and weight {w} must have the same rank >= 3")
        _check_window_props(props, spatial)
        group = props.int("group")
        if group < 1 or x[1] % group or w[0] % group or w[1] * group != x[1]:
            raise VerifyException(f"group {group} does not fit {x[1]} input channels and "
                                  f"weight {w}")
        if len(operand_types) == 3 and _shape(operand_types[2]) != (w[0],):
            raise VerifyException(f"bias {_shape(operand_types[2])} must be ({w[0]},)")
        strides, pads, dilations = props.ints("strides"), props.ints("pads"), props.ints("dilations")
        out = [window_output_size(x[2 + i], w[2 + i], strides[i], pads[i], pads[spatial + i],
                                  dilations[i]) for i in range(spatial)]
        result = _tensor((x[0], w[0], *out), _element(operand_types[0]))
        cls.check_activation(props, result)
        return [result]


@irdl_op_definition
class ConvTransposeOp(FusedActivationOperation):
    """N-d transposed convolution, weights I x O/group x (kernel)."""

    name = "nn.conv_transpose"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    output = result_def(TensorType)
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)
    dilations = prop_def(DenseArrayBase)
    output_padding = prop_def(DenseArrayBase)
    group = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, operand_types, props):
        x, w = _shape(operand_types[0]), _shape(operand_types[1])
        spatial = len(x) - 2
        if spatial < 1 or len(w) != len(x):
            raise VerifyException(f"input {x} and weight {w} must have the same rank >= 3")
        _check_window_props(props, spatial)
        group = props.int("group")
        if group < 1 or w[0] != x[1] or x[1] % group:
            raise VerifyException(f"group {group} does not fit input {x} and weight {w}")
        out_channels = w[1] * group
        if len(operand_types) == 3 and _shape(operand_types[2]) != (out_channels,):
            raise VerifyException(f"bias {_shape(operand_types[2])} must be ({out_channels},)")
        strides, pads = props.ints("strides"), props.ints("pads")
        dilations, output_padding = props.ints("dilations"), props.ints("output_padding")
        if len(output_padding) != spatial or any(
                not 0 <= p < max(s, d) for p, s, d in zip(output_padding, strides, dilations,
                                                          strict=True)):
            raise VerifyException(f"output_padding {output_padding} must be non-negative and "
                                  "smaller than the stride or the dilation on each axis")
        out = [(x[2 + i] - 1) * strides[i] - pads[i] - pads[spatial + i]
               + dilations[i] * (w[2 + i] - 1) + output_padding[i] + 1 for i in range(spatial)]
        if any(d < 1 for d in out):
            raise VerifyException(f"output spatial size {out} is empty")
        result = _tensor((x[0], out_channels, *out), _element(operand_types[0]))
        cls.check_activation(props, result)
        return [result]


@irdl_op_definition
class BatchNormOp(NNOperation):
    """Inference batch normalisation over axis 1."""

    name = "nn.batch_norm"
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    bias = operand_def(TensorType)
    mean = operand_def(TensorType)
    var = operand_def(TensorType)
    output = result_def(TensorType)
    epsilon = prop_def(FloatAttr)

    @classmethod
    def infer(cls, operand_types, props):
        x = _shape(operand_types[0])
        if len(x) < 2:
            raise VerifyException(f"input {x} needs a channel axis")
        for what, t in zip(("scale", "bias", "mean", "var"), operand_types[1:], strict=True):
            if _shape(t) != (x[1],):
                raise VerifyException(f"{what} {_shape(t)} must be ({x[1]},)")
        if props.float("epsilon") < 0:
            raise VerifyException("epsilon must be non-negative")
        return [operand_types[0]]


@irdl_op_definition
class LayerNormOp(NNOperation):
    """Normalise over the axes from `axis` to the last, then scale and shift."""

    name = "nn.layer_norm"
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    output = result_def(TensorType)
    axis = prop_def(IntegerAttr)
    epsilon = prop_def(FloatAttr)

    @classmethod
    def infer(cls, operand_types, props):
        x = _shape(operand_types[0])
        axis = props.int("axis")
        _check_axis(axis, len(x))
        for t in operand_types[1:]:
            if broadcast_shapes(x[axis:], _shape(t)) != x[axis:]:
                raise VerifyException(f"scale/bias {_shape(t)} do not broadcast to {x[axis:]}")
        return [operand_types[0]]


def matmul_shape(a: Shape, b: Shape) -> Shape:
    """numpy.matmul's result shape."""
    if not a or not b:
        raise VerifyException("matmul operands must have rank >= 1")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise VerifyException(f"contraction sizes differ: {a} x {b}")
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    out = (*batch, a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


@irdl_op_definition
class MatMulOp(FusedActivationOperation):
    """numpy.matmul semantics (batched, broadcast, 1-d promotion)."""

    name = "nn.matmul"
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    output = result_def(TensorType)

    @classmethod
    def infer(cls, operand_types, props):
        a, b = operand_types
        result = _tensor(matmul_shape(_shape(a), _shape(b)), _element(a))
        cls.check_activation(props, result)
        return [result]


@irdl_op_definition
class GemmOp(FusedActivationOperation):
    """alpha * op(A) @ op(B) + beta * C, A and B 2-d."""

    name = "nn.gemm"
    a = operand_def(TensorType)
    b = operand_def(TensorType)
    c = opt_operand_def(TensorType)
    output = result_def(TensorType)
    alpha = prop_def(FloatAttr)
    beta = prop_def(FloatAttr)
    trans_a = prop_def(IntegerAttr)
    trans_b = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, operand_types, props):
        a, b = _shape(operand_types[0]), _shape(operand_types[1])
        if len(a) != 2 or len(b) != 2:
            raise VerifyException(f"A {a} and B {b} must be 2-d")
        m, k = a[::-1] if props.int("trans_a") else a
        k2, n = b[::-1] if props.int("trans_b") else b
        if k != k2:
            raise VerifyException(f"contraction sizes differ: {k} and {k2}")
        if len(operand_types) == 3 and broadcast_shapes(_shape(operand_types[2]), (m, n)) != (m, n):
            raise VerifyException(f"C {_shape(operand_types[2])} does not broadcast to {(m, n)}")
        result = _tensor((m, n), _element(operand_types[0]))
        cls.check_activation(props, result)
        return [result]


# --------------------------------------------------------------------------------------
# Reductions and pooling
# --------------------------------------------------------------------------------------


class ReduceOperation(NNOperation, ABC):
    """Reduce over `axes` (non-negative, sorted, never empty); `keepdims` is 0 or 1."""

    input = operand_def(TensorType)
    output = result_def(TensorType)
    axes = prop_def(DenseArrayBase)
    keepdims = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, operand_types, props):
        x = _shape(operand_types[0])
        axes = props.ints("axes")
        if not axes or list(axes) != sorted(set(axes)):
            raise VerifyException(f"axes {axes} must be sorted, unique and not empty")
        for axis in axes:
            _check_axis(axis, len(x))
        if props.int("keepdims"):
            out = tuple(1 if i in axes else d for i, d in enumerate(x))
        else:
            out = tuple(d for i, d in enumerate(x) if i not in axes)
        return [_tensor(out, _element(operand_types[0]))]


@irdl_op_definition
class ReduceMeanOp(ReduceOperation):
    name = "nn.reduce_mean"


@irdl_op_definition
class ReduceSumOp(ReduceOperation):
    name = "nn.reduce_sum"


@irdl_op_definition
class ReduceMaxOp(ReduceOperation):
    name = "nn.reduce_max"


@irdl_op_definition
class GlobalAveragePoolOp(NNOperation):
    name = "nn.global_average_pool"
    input = operand_def(TensorType)
    output = result_def(TensorType)

    @classmethod
    def infer(cls, operand_types, props):
        x = _shape(operand_types[0])
        if len(x) < 3:
            raise VerifyException(f"input {x} must have rank >= 3")
        return [_tensor((*x[:2], *([1] * (len(x) - 2))), _element(operand_types[0]))]


class PoolOperation(NNOperation, ABC):
    input = operand_def(TensorType)
    output = result_def(TensorType)
    kernel_shape = prop_def(DenseArrayBase)
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)
    ceil_mode = prop_def(IntegerAttr)

    HAS_DILATIONS: ClassVar[bool] = False

    @classmethod
    def infer(cls, operand_types, props):
        x = _shape(operand_types[0])
        spatial = len(x) - 2
        kernel = props.ints("kernel_shape")
        if spatial < 1 or len(kernel) != spatial or any(k < 1 for k in kernel):
            raise VerifyException(f"kernel {kernel} does not fit input {x}")
        _check_window_props(props, spatial, cls.HAS_DILATIONS)
        strides, pads = props.ints("strides"), props.ints("pads")
        dilations = props.ints("dilations") if cls.HAS_DILATIONS else (1,) * spatial
        if any(pads[i] >= kernel[i] or pads[spatial + i] >= kernel[i] for i in range(spatial)):
            raise VerifyException(f"pads {pads} must be smaller than the kernel {kernel}")
        out = [window_output_size(x[2 + i], kernel[i], strides[i], pads[i], pads[spatial + i],
                                  dilations[i], bool(props.int("ceil_mode")))
               for i in range(spatial)]
        return [_tensor((*x[:2], *out), _element(operand_types[0]))]


@irdl_op_definition
class AveragePoolOp(PoolOperation):
    name = "nn.average_pool"
    count_include_pad = prop_def(IntegerAttr)


@irdl_op_definition
class MaxPoolOp(PoolOperation):
    name = "nn.max_pool"
    dilations = prop_def(DenseArrayBase)
    HAS_DILATIONS: ClassVar[bool] = True


# --------------------------------------------------------------------------------------
# Data movement
# --------------------------------------------------------------------------------------


@irdl_op_definition
class ConcatOp(NNOperation):
    name = "nn.concat"
    inputs = var_operand_def(TensorType)
    output = result_def(TensorType)
    axis = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, operand_types, props):
        if not operand_types:
            raise VerifyException("needs at least one input")
        shapes = [_shape(t) for t in operand_types]
        axis = props.int("axis")
        _check_axis(axis, len(shapes[0]))
        for s in shapes[1:]:
            if len(s) != len(shapes[0]) or any(
                    a != b for i, (a, b) in enumerate(zip(s, shapes[0], strict=True)) if i != axis):
                raise VerifyException(f"input shapes {shapes} differ outside axis {axis}")
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        return [_tensor(out, _element(operand_types[0]))]


@irdl_op_definition
class SplitOp(NNOperation):
    name = "nn.split"
    input = operand_def(TensorType)
    outputs = var_result_def(TensorType)
    axis = prop_def(IntegerAttr)
    sizes = prop_def(DenseArrayBase)

    @classmethod
    def infer(cls, operand_types, props):
        x = _shape(operand_types[0])
        axis, sizes = props.int("axis"), props.ints("sizes")
        _check_axis(axis, len(x))
        if sum(sizes) != x[axis] or any(s < 0 for s in sizes):
            raise VerifyException(f"sizes {sizes} do not add up to {x[axis]}")
        return [_tensor((*x[:axis], s, *x[axis + 1:]), _element(operand_types[0])) for s in sizes]


@irdl_op_definition
class SliceOp(NNOperation):
    """x[starts[i]:ends[i]:steps[i]] on every axis, bounds clamped and explicit.

    The bounds are those of Python's `range`: with a negative step an end of -1 means
    "through index 0" (not "the last element" as in a numpy slice).
    """

    name = "nn.slice"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    starts = prop_def(DenseArrayBase)
    ends = prop_def(DenseArrayBase)
    steps = prop_def(DenseArrayBase)

    @classmethod
    def infer(cls, operand_types, props):
        x = _shape(operand_types[0])
        starts, ends, steps = props.ints("starts"), props.ints("ends"), props.ints("steps")
        if not len(starts) == len(ends) == len(steps) == len(x):
            raise VerifyException(f"starts/ends/steps need one entry per axis ({len(x)})")
        if any(s == 0 for s in steps):
            raise VerifyException("steps must not be 0")
        out = [len(range(s, e, st)) for s, e, st in zip(starts, ends, steps, strict=True)]
        return [_tensor(out, _element(operand_types[0]))]


@irdl_op_definition
class ReshapeOp(NNOperation):
    """Reshape, Flatten, Squeeze and Unsqueeze all become this: `shape` is explicit."""

    name = "nn.reshape"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    shape = prop_def(DenseArrayBase)

    @classmethod
    def infer(cls, operand_types, props):
        x = _shape(operand_types[0])
        shape = props.ints("shape")
        if any(d < 0 for d in shape) or math.prod(shape) != math.prod(x):
            raise VerifyException(f"cannot reshape {x} to {shape}")
        return [_tensor(shape, _element(operand_types[0]))]


@irdl_op_definition
class ExpandOp(NNOperation):
    """Broadcast to `shape` (the already-broadcast ONNX Expand result)."""

    name = "nn.expand"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    shape = prop_def(DenseArrayBase)

    @classmethod
    def infer(cls, operand_types, props):
        x, shape = _shape(operand_types[0]), props.ints("shape")
        if broadcast_shapes(x, shape) != shape:
            raise VerifyException(f"cannot expand {x} to {shape}")
        return [_tensor(shape, _element(operand_types[0]))]


@irdl_op_definition
class TransposeOp(NNOperation):
    name = "nn.transpose"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    perm = prop_def(DenseArrayBase)

    @classmethod
    def infer(cls, operand_types, props):
        x, perm = _shape(operand_types[0]), props.ints("perm")
        if sorted(perm) != list(range(len(x))):
            raise VerifyException(f"perm {perm} is not a permutation of {len(x)} axes")
        return [_tensor([x[p] for p in perm], _element(operand_types[0]))]


@irdl_op_definition
class PadOp(NNOperation):
    """Pad with all begins then all ends; mode constant / reflect / edge."""

    name = "nn.pad"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    pads = prop_def(DenseArrayBase)
    mode = prop_def(StringAttr)
    value = prop_def(FloatAttr)

    @classmethod
    def infer(cls, operand_types, props):
        x, pads = _shape(operand_types[0]), props.ints("pads")
        if len(pads) != 2 * len(x):
            raise VerifyException(f"pads {pads} need {2 * len(x)} entries")
        if props.str("mode") not in ("constant", "reflect", "edge"):
            raise VerifyException(f"mode {props.str('mode')} is not constant, reflect or edge")
        out = [d + pads[i] + pads[len(x) + i] for i, d in enumerate(x)]
        if any(d < 0 for d in out):
            raise VerifyException(f"negative padding {pads} empties the tensor {x}")
        return [_tensor(out, _element(operand_types[0]))]


@irdl_op_definition
class ResizeOp(NNOperation):
    """Resize to `sizes` (the output shape) with ONNX Resize's coordinate rules.

    `scales` are the per-axis scales the coordinate transform uses (given or
    computed as output / input by the importer). Modes: nearest, linear.
    """

    name = "nn.resize"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    mode = prop_def(StringAttr)
    coordinate_transformation_mode = prop_def(StringAttr)
    nearest_mode = prop_def(StringAttr)
    scales = prop_def(DenseArrayBase)
    sizes = prop_def(DenseArrayBase)

    MODES: ClassVar[tuple[str, ...]] = ("nearest", "linear")
    TRANSFORMS: ClassVar[tuple[str, ...]] = (
        "half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")
    NEAREST: ClassVar[tuple[str, ...]] = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")

    @classmethod
    def infer(cls, operand_types, props):
        x, sizes, scales = _shape(operand_types[0]), props.ints("sizes"), props.floats("scales")
        if len(sizes) != len(x) or len(scales) != len(x) or any(s <= 0 for s in scales):
            raise VerifyException(f"sizes {sizes} and scales {scales} need one positive entry per axis")
        for key, allowed in (("mode", cls.MODES), ("coordinate_transformation_mode", cls.TRANSFORMS),
                             ("nearest_mode", cls.NEAREST)):
            if props.str(key) not in allowed:
                raise VerifyException(f"{key} {props.str(key)} is not one of {', '.join(allowed)}")
        return [_tensor(sizes, _element(operand_types[0]))]


@irdl_op_definition
class GatherOp(NNOperation):
    """data.take(indices, axis); indices are integers, negative ones count from the end."""

    name = "nn.gather"
    data = operand_def(TensorType)
    indices = operand_def(TensorType)
    output = result_def(TensorType)
    axis = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, operand_types, props):
        data, indices = _shape(operand_types[0]), _shape(operand_types[1])
        axis = props.int("axis")
        _check_axis(axis, len(data))
        from xdsl.dialects.builtin import IntegerType

        if not isinstance(_element(operand_types[1]), IntegerType):
            raise VerifyException(f"indices must be integers, got {operand_types[1]}")
        return [_tensor((*data[:axis], *indices, *data[axis + 1:]), _element(operand_types[0]))]


NN = Dialect(
    "nn",
    [
        ConstantOp, ReluOp, SigmoidOp, TanhOp, ErfOp, SqrtOp, ReciprocalOp, ExpOp, NegOp,
        HardSwishOp, LeakyReluOp, HardSigmoidOp, GeluOp, ClipOp, SoftmaxOp, LRNOp, CastOp,
        AddOp, SubOp, MulOp, DivOp, PowOp, MaxOp, MinOp, EqualOp, PReluOp, WhereOp,
        ConvOp, ConvTransposeOp, BatchNormOp, LayerNormOp, MatMulOp, GemmOp,
        ReduceMeanOp, ReduceSumOp, ReduceMaxOp, GlobalAveragePoolOp, AveragePoolOp, MaxPoolOp,
        ConcatOp, SplitOp, SliceOp, ReshapeOp, ExpandOp, TransposeOp, PadOp, ResizeOp, GatherOp,
    ],
    [],
)
