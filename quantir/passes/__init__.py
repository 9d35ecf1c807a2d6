"""Pass registry and pipelines.

Every quantir pass is an xDSL `ModulePass` in its own module here, with a kebab-case
name and typed options, usable from Python (`quantir.compile(module, "a,b{x=1}")`)
and from `quantir-opt -p`. A few generic xDSL passes are registered too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass, PassPipeline, PassPipelineCallbackType

from quantir.errors import PipelineError


def _fold_constants() -> type[ModulePass]:
    from quantir.passes.fold_constants import FoldConstantsPass

    return FoldConstantsPass


def _calibrate() -> type[ModulePass]:
    from quantir.passes.calibrate import CalibratePass

    return CalibratePass


def _quantize() -> type[ModulePass]:
    from quantir.passes.quantize import QuantizePass

    return QuantizePass


def _fuse_bn() -> type[ModulePass]:
    from quantir.passes.fuse_bn import FuseBatchNormPass

    return FuseBatchNormPass


def _fuse_activation() -> type[ModulePass]:
    from quantir.passes.fuse_activation import FuseActivationPass

    return FuseActivationPass


def _cle() -> type[ModulePass]:
    from quantir.passes.cle import CrossLayerEqualizationPass

    return CrossLayerEqualizationPass


def _layernorm_decompose() -> type[ModulePass]:
    from quantir.passes.layernorm_decompose import LayerNormDecomposePass

    return LayerNormDecomposePass


def _layernorm_fuse() -> type[ModulePass]:
    from quantir.passes.layernorm_fuse import LayerNormFusePass

    return LayerNormFusePass


def _matmul_decompose() -> type[ModulePass]:
    from quantir.passes.matmul_decompose import MatMulDecomposePass

    return MatMulDecomposePass


def _lower_to_int() -> type[ModulePass]:
    from quantir.lowering.lower_to_int import LowerToIntPass

    return LowerToIntPass


def _bias_correction() -> type[ModulePass]:
    from quantir.passes.bias_correction import BiasCorrectionPass

    return BiasCorrectionPass


def _legality() -> type[ModulePass]:
    from quantir.passes.legality import LegalityPass

    return LegalityPass


def _legalize() -> type[ModulePass]:
    from quantir.passes.legalize import LegalizePass

    return LegalizePass


def available_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    """Pass name -> factory of its class (factories keep imports lazy for fast CLIs)."""
    from xdsl.transforms import get_all_passes

    generic = get_all_passes()
    passes: dict[str, Callable[[], type[ModulePass]]] = {
        name: generic[name] for name in ("canonicalize", "cse", "dce")}
    passes["fold-constants"] = _fold_constants
    passes["fuse-bn"] = _fuse_bn
    passes["fuse-activation"] = _fuse_activation
    passes["cle"] = _cle
    passes["layernorm-decompose"] = _layernorm_decompose
    passes["layernorm-fuse"] = _layernorm_fuse
    passes["matmul-decompose"] = _matmul_decompose
    passes["calibrate"] = _calibrate
    passes["quantize"] = _quantize
    passes["legality"] = _legality
    passes["legalize"] = _legalize
    passes["bias-correction"] = _bias_correction
    passes["lower-to-int"] = _lower_to_int
    return passes


def parse_pipeline(spec: str, callback: PassPipelineCallbackType | None = None) -> PassPipeline:
    """A pipeline from `a,b{opt=1}`; a malformed spec raises PipelineError (one line)."""
    from xdsl.utils.exceptions import ArgSpecParseError

    available = available_passes()
    try:
        return PassPipeline.parse_spec(available, spec, callback)
    # xDSL raises ValueError, TypeError ... and ArgSpecParseError, a BaseException.
    except (Exception, ArgSpecParseError) as error:
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
        detail = lines[-1] if lines else type(error).__name__
        if "Unrecognized passes" in detail:
            detail += f"; available passes: {', '.join(sorted(available))}"
        if "Unknown token" in detail:
            detail += ' (quote option values holding / or spaces: script="dir/file.alls")'
        raise PipelineError(f"bad pass pipeline '{spec}': {detail}") from error


@dataclass
class QuantirContext(Context):
    """The pipeline's context, carrying the handles that data-driven passes read.

    `calibration`: calibration samples (anything `calibrate` accepts as data);
    `config`: a `QuantConfig` (per-layer precision, calibration settings, overrides).
    A pass never takes such data from a global: from here, or from its own options.
    """

    calibration: Any = None
    config: Any = None
    tensor_names: dict[tuple[str, int], str] | None = None
    """(ONNX node name, output index) -> ONNX tensor name, for encodings files."""
    float_reference: ModuleOp | None = None
    """The float module as `quantize` found it (set by that pass; bias-correction reads it)."""


def pipeline_context(calibration: Any = None, config: Any = None,
                     tensor_names: dict[tuple[str, int], str] | None = None) -> QuantirContext:
    from quantir.ir import quantir_context

    ctx = QuantirContext(calibration=calibration, config=config, tensor_names=tensor_names)
    for dialect in quantir_context().loaded_dialects:
        ctx.load_dialect(dialect)
    return ctx


def compile(module: ModuleOp, pipeline: str, *, calibration: Any = None,  # noqa: A001
            config: Any = None, tensor_names: dict[tuple[str, int], str] | None = None) \
        -> ModuleOp:
    """Run a pipeline on a module in place (verifying after each pass) and return it.

    `calibration` and `config` are the handles for data-driven passes (calibrate,
    quantize, bias correction): see `QuantirContext`.
    """

    def verify(_previous: ModulePass | None, op: ModuleOp, _next: ModulePass | None) -> None:
        op.verify()

    parse_pipeline(pipeline, verify).apply(pipeline_context(calibration, config, tensor_names),
                                           module)
    return module
