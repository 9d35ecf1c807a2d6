"""`lower-to-int` and the integer program against the fake-quant simulation."""

from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from xdsl.dialects.builtin import AnyFloat, ModuleOp

import quantir
from quantir.analysis.integer_vs_simulation import Comparison, compare
from quantir.dialects import nn, q, qi
from quantir.errors import QuantirError
from quantir.ir import parse_module, print_module
from quantir.lowering.lower_to_int import lower_to_int
from quantir.passes.presets import quantize_model
from quantir.passes.qconfig import QuantConfig, QuantirWarning
from quantir.runtime.int_kernels import MOVEMENT_OPS
from tests.conftest import DATA
from tests.unit.test_cli import assert_one_line_error, run

CNN = DATA / "digits_cnn.onnx"
VIT = DATA / "tiny_vit.onnx"
CALIB = DATA / "digits_calib.npz"


@cache
def annotated(model: Path, precision: str = "a8_w8", script: str | None = None) -> ModuleOp:
    config = QuantConfig.build(precision=precision, script=script)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantirWarning)
        return quantize_model(model, CALIB, config).module


def logits(module: ModuleOp, inputs: np.ndarray) -> np.ndarray:
    session = quantir.Session(module)
    return np.concatenate([session.run({"input": inputs[i:i + 1]})["logits"]
                           for i in range(len(inputs))])


def float_arithmetic(module: ModuleOp) -> list[str]:
    """Ops computing in float: nn ops with a float result (nn ops left on quantized
    tensors only move or pick integers)."""
    found = []
    for op in module.walk():
        if isinstance(op, nn.NNOperation) and not isinstance(op, nn.ConstantOp):
            if any(isinstance(r.type.element_type, AnyFloat) for r in op.results):
                found.append(f"{op.name} '{op.node_name}'")
            else:
                assert isinstance(op, MOVEMENT_OPS), op.name
    return found


@pytest.mark.parametrize("model", [CNN, VIT])
def test_no_float_arithmetic_remains(model: Path) -> None:
    program = lower_to_int(annotated(model))
    assert float_arithmetic(program) == []
    kinds = {op.name for op in program.walk()}
    assert "q.requant" in kinds and any(kind.startswith("qi.") for kind in kinds)
    # Quantize / dequantize only at the boundaries: the input and the logits.
    assert sum(isinstance(op, q.QuantizeOp) for op in program.walk()) == 1
    assert sum(isinstance(op, q.DequantizeOp) for op in program.walk()) == 1
    program.verify()


@pytest.mark.parametrize("model", [CNN, VIT])
def test_integer_top1_matches_the_simulation(model: Path) -> None:
    test = np.load(DATA / "digits_test.npz")
    inputs, labels = test["input"], test["label"]
    module = annotated(model)
    simulated = logits(module, inputs)
    integer = logits(lower_to_int(module), inputs)
    top1_sim = float((simulated.argmax(1) == labels).mean())
    top1_int = float((integer.argmax(1) == labels).mean())
    scale = np.abs(simulated - integer)
    print(f"{model.name}: top-1 simulation {top1_sim:.4f} integer {top1_int:.4f}; "
          f"logits differing {np.mean(scale > 0):.4%}")
    assert abs(top1_sim - top1_int) <= 0.002


@pytest.mark.parametrize("model", [CNN, VIT])
def test_layer_differences_are_rare_and_one_lsb(model: Path) -> None:
    module = annotated(model)
    inputs = np.load(DATA / "digits_test.npz")["input"][:40]
    found = compare(quantir.Session(module), quantir.Session(lower_to_int(module)),
                    [{"input": inputs[i:i + 1]} for i in range(len(inputs))])
    isolated = Comparison.total(found.isolated)
    propagated = Comparison.total(found.propagated)
    print(f"{model.name}: isolated {isolated.fraction:.4%} of layer outputs differ, max "
          f"{isolated.max_lsb} LSB; propagated {propagated.fraction:.4%}, max "
          f"{propagated.max_lsb} LSB")
    assert isolated.elements > 10_000
    assert isolated.max_lsb <= 1
    assert isolated.fraction < 0.001


def test_rounding_modes_all_run_and_stay_close() -> None:
    module = annotated(CNN)
    inputs = np.load(DATA / "digits_test.npz")["input"][:30]
    reference = logits(lower_to_int(module, "single"), inputs)
    for mode in ("tflite", "tosa"):
        program = lower_to_int(module, mode)
        modes = {op.rounding_mode for op in program.walk() if isinstance(op, q.RequantOp)}
        assert modes == {mode}
        other = logits(program, inputs)
        assert np.abs(other - reference).max() <= 3 * 0.11  # a few LSB of the logits


def test_sixteen_bit_program_runs_close_to_its_simulation() -> None:
    module = annotated(VIT, "a16_w16")
    program = lower_to_int(module)
    widths = {op.output.type.element_type.storage_bits for op in program.walk()
              if isinstance(op, q.RequantOp)}
    assert 16 in widths
    assert any(isinstance(op, qi.LookupOp) and len(op.table.get_shape()) == 1
               and op.table.get_shape()[0] == 65536 for op in program.walk())
    inputs = np.load(DATA / "digits_test.npz")["input"][:20]
    simulated, integer = logits(module, inputs), logits(program, inputs)
    assert (simulated.argmax(1) == integer.argmax(1)).all()
    assert np.abs(simulated - integer).max() < 0.05 * np.abs(simulated).max()


def test_precision_change_becomes_a_requant() -> None:
    module = annotated(CNN, script=str(DATA / "configs" / "digits_mixed.alls"))
    assert any(isinstance(op, q.PrecisionChangeOp) for op in module.walk())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        program = lower_to_int(module)
    assert not any(isinstance(op, q.PrecisionChangeOp) for op in program.walk())
    # The script keeps the classifier in float: it is the one reported fallback.
    assert float_arithmetic(program) == ["nn.gemm '/classifier/Gemm'"]
    assert any("'/classifier/Gemm' stays in float" in str(w.message) for w in caught)
    inputs = np.load(DATA / "digits_test.npz")["input"][:20]
    assert (logits(module, inputs).argmax(1) == logits(program, inputs).argmax(1)).all()


def test_program_prints_and_reloads_bit_identically() -> None:
    program = lower_to_int(annotated(VIT))
    text = print_module(program, elide_limit=None)
    reloaded = parse_module(text)
    assert print_module(reloaded, elide_limit=None) == text
    inputs = np.load(DATA / "digits_test.npz")["input"][:5]
    assert np.array_equal(logits(program, inputs), logits(reloaded, inputs))


def test_an_unquantized_module_is_refused() -> None:
    with pytest.raises(QuantirError, match="quantize it first"):
        lower_to_int(quantir.import_onnx(CNN))


def test_unknown_rounding_is_a_pipeline_error() -> None:
    with pytest.raises(QuantirError, match="unknown rounding 'nearest'"):
        lower_to_int(annotated(CNN), "nearest")


def test_cli_writes_and_runs_the_integer_program(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("quantir", "quantize", str(CNN), "--calib", str(CALIB), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "model.qir.mlir").is_file()
    sample = tmp_path / "x.npy"
    inputs = np.load(DATA / "digits_sample.npy")[:1]
    np.save(sample, inputs)
    result = run("quantir", "run", str(out / "model.qir.mlir"), "--input", str(sample), "-o",
                 str(tmp_path / "y"))
    assert result.returncode == 0, result.stderr
    expected = logits(lower_to_int(annotated(CNN)), inputs)
    assert np.array_equal(np.load(tmp_path / "y" / "logits.npy"), expected)

    # A batch-1 program runs a batch sample by sample.
    batch = np.load(DATA / "digits_sample.npy")
    np.save(sample, batch)
    result = run("quantir", "run", str(out / "model.qir.mlir"), "--input", str(sample), "-o",
                 str(tmp_path / "y"))
    assert result.returncode == 0, result.stderr
    program = lower_to_int(annotated(CNN))
    expected = np.concatenate([logits(program, batch[i:i + 1]) for i in range(len(batch))])
    assert np.array_equal(np.load(tmp_path / "y" / "logits.npy"), expected)

    wrong = tmp_path / "wrong.npy"
    np.save(wrong, batch[:, :, :4])
    assert_one_line_error(run("quantir", "run", str(out / "model.qir.mlir"), "--input", str(wrong),
                              "-o", str(tmp_path / "z")), "has shape [4, 1, 4, 8]")
    np.save(wrong, inputs.astype(np.float64))
    assert_one_line_error(run("quantir", "run", str(out / "model.qir.mlir"), "--input", str(wrong),
                              "-o", str(tmp_path / "z")), "dtype float64")
    assert_one_line_error(run("quantir", "run", str(out / "model.qir.mlir"), "--input",
                              f"x={sample}", "-o", str(tmp_path / "z")), "unknown input 'x'")
    assert not (tmp_path / "z").exists()


def test_cli_refuses_a_program_with_elided_tables(tmp_path: Path) -> None:
    program = lower_to_int(annotated(VIT))
    path = tmp_path / "elided.qir.mlir"
    path.write_text(print_module(program))  # default: large constants elided
    sample = tmp_path / "x.npy"
    np.save(sample, np.load(DATA / "digits_sample.npy")[:1])
    assert_one_line_error(run("quantir", "run", str(path), "--input", str(sample), "-o",
                              str(tmp_path / "y")), "--print-large-constants")
