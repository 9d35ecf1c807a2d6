"""How the integer program differs from the fake-quant simulation, layer by layer.

The simulation (the annotated module run by `quantir.Session`) computes each layer in
float and rounds once; the integer program computes exactly in integers and rounds in
its requantization. They agree except where a value lies within rounding error of a
half-LSB boundary. Two measures, per layer (keyed by the ONNX node whose quantized
output it is):

- isolated: the integer layer fed the simulation's own inputs: what the integer
  kernels and requantization contribute by themselves (expected: rare, <= 1 LSB);
- propagated: the whole integer program run on its own values: the isolated
  differences carried through the network (a deep net amplifies them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from xdsl.ir import Operation, SSAValue

from quantir.dialects import q
from quantir.runtime.session import Session


@dataclass
class LayerDifference:
    elements: int = 0
    differing: int = 0
    max_lsb: int = 0

    def add(self, simulated: np.ndarray, integer: np.ndarray) -> None:
        delta = np.abs(simulated.astype(np.int64) - integer.astype(np.int64))
        self.elements += delta.size
        self.differing += int(np.count_nonzero(delta))
        self.max_lsb = max(self.max_lsb, int(delta.max(initial=0)))

    @property
    def fraction(self) -> float:
        return self.differing / self.elements if self.elements else 0.0


@dataclass
class Comparison:
    isolated: dict[str, LayerDifference] = field(default_factory=dict)
    propagated: dict[str, LayerDifference] = field(default_factory=dict)

    @staticmethod
    def total(layers: Mapping[str, LayerDifference]) -> LayerDifference:
        found = LayerDifference()
        for layer in layers.values():
            found.elements += layer.elements
            found.differing += layer.differing
            found.max_lsb = max(found.max_lsb, layer.max_lsb)
        return found


def _layer_of(op: Operation | None) -> str | None:
    return getattr(op, "node_name", None)


def simulated_layers(session: Session, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The quantized output of every layer of an annotated module, by its node name."""
    found: dict[str, np.ndarray] = {}

    def observe(value: SSAValue, array: np.ndarray) -> None:
        op = value.owner
        if isinstance(op, q.QuantizeOp):
            layer = _layer_of(op.input.owner)
            if layer is not None:
                found[layer] = array

    session.run(feeds, observer=observe)
    return found


def _is_layer_output(value: SSAValue) -> bool:
    element = getattr(value.type, "element_type", None)
    return isinstance(element, q.QuantizedType) and element.storage_bits < 32


def integer_layers(session: Session, feeds: Mapping[str, np.ndarray],
                   substitute: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The output of every layer of an integer program, by node name. With `substitute`,
    each layer's output is replaced by the given array once computed (so the next
    layers read the simulation's values)."""
    program = session.program
    env: list[np.ndarray | None] = [None] * program.slot_count
    for slot, array in program.constants:
        env[slot] = array
    for slot, array in zip(program.arguments, session._check_feeds(feeds), strict=True):
        env[slot] = array
    # A layer's output is the last value its ops compute (a gather, then its requant).
    final: dict[str, int] = {}
    for step in program.steps:
        layer = _layer_of(step.op)
        for slot in step.outputs:
            if layer is not None and _is_layer_output(program.values[slot]):
                final[layer] = slot
    found: dict[str, np.ndarray] = {}
    for step in program.steps:
        outputs = step.kernel(*[env[s] for s in step.inputs])
        for slot, array in zip(step.outputs, outputs, strict=True):
            layer = _layer_of(step.op)
            if layer is not None and final.get(layer) == slot:
                found[layer] = array
                if substitute is not None and layer in substitute \
                        and substitute[layer].shape == array.shape:
                    array = substitute[layer].astype(array.dtype)
            env[slot] = array
    return found


def compare(annotated: Session, integer: Session,
            samples: Iterable[Mapping[str, np.ndarray]]) -> Comparison:
    """Per-layer differences (in LSB of each layer's output) over `samples`."""
    result = Comparison()
    for feeds in samples:
        simulated = simulated_layers(annotated, feeds)
        for target, substitute in ((result.propagated, None), (result.isolated, simulated)):
            computed = integer_layers(integer, feeds, substitute)
            for layer, array in computed.items():
                expected = simulated.get(layer)
                if expected is not None and expected.shape == array.shape:
                    target.setdefault(layer, LayerDifference()).add(expected, array)
    return result
