"""The command-line tools: round trips, outputs, and one-line errors on bad input."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import quantir
from tests.conftest import DATA

CNN = DATA / "digits_cnn.onnx"


def run(tool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    executable = shutil.which(tool)
    assert executable, f"{tool} is not installed (pip install -e .)"
    return subprocess.run([executable, *map(str, args)], capture_output=True, text=True,
                          check=False, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_opt_round_trip_is_bit_identical(tmp_path: Path) -> None:
    a, b = tmp_path / "a.mlir", tmp_path / "b.mlir"
    assert run("quantir-opt", CNN, "-o", a, "--print-large-constants").returncode == 0
    assert run("quantir-opt", a, "-o", b, "--print-large-constants").returncode == 0
    assert a.read_bytes() == b.read_bytes()
    x = np.load(DATA / "digits_sample.npy")[:1]
    expected = quantir.Session(CNN).run({"input": x})["logits"]
    actual = quantir.Session(b).run({"input": x})["logits"]
    np.testing.assert_array_equal(actual, expected)


def test_opt_elides_large_constants_by_default(tmp_path: Path) -> None:
    result = run("quantir-opt", CNN)
    assert result.returncode == 0, result.stderr
    assert "dense_resource<__elided__> : tensor<16x1x3x3xf32>" in result.stdout
    elided = tmp_path / "elided.mlir"
    elided.write_text(result.stdout)
    failed = run("quantir", "run", elided, "--input", DATA / "digits_sample.npy", "-o",
                 tmp_path / "out")
    assert_one_line_error(failed, "elided", "--print-large-constants")


def test_print_ir_after_all_includes_last_pass() -> None:
    result = run("quantir-opt", CNN, "-p", "fold-constants,cse", "--print-ir-after-all")
    assert result.returncode == 0, result.stderr
    dumps = [line for line in result.stderr.splitlines() if "IR Dump After" in line]
    assert dumps == ["// -----// IR Dump After fold-constants //----- //",
                     "// -----// IR Dump After cse //----- //"]


def test_run_writes_one_file_per_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("quantir", "run", CNN, "--input", f"input={DATA / 'digits_sample.npy'}",
                 "-o", out)
    assert result.returncode == 0, result.stderr
    logits = np.load(out / "logits.npy")
    assert logits.shape == (4, 10)
    assert list(logits.argmax(axis=1)) == [2, 0, 4, 9]  # the sample's labels


def test_version() -> None:
    result = run("quantir-opt", "--version")
    assert result.returncode == 0 and "quantir-opt" in result.stdout


# -- bad input ---------------------------------------------------------------------------


def make_model(path: Path, nodes: list, inputs: list, outputs: list,
               initializers: list | None = None, opset: int = 17) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return path


def test_missing_file(tmp_path: Path) -> None:
    assert_one_line_error(run("quantir-opt", tmp_path / "nope.onnx"), "nope.onnx")
    assert_one_line_error(run("quantir", "run", tmp_path / "nope.onnx", "--input",
                              DATA / "digits_sample.npy", "-o", tmp_path / "o"), "no such file")


def test_not_onnx(tmp_path: Path) -> None:
    bogus = tmp_path / "text.onnx"
    bogus.write_text("this is not a model\n" * 10)
    assert_one_line_error(run("quantir-opt", bogus), "text.onnx")


def test_truncated_onnx(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(CNN.read_bytes()[: CNN.stat().st_size // 2])
    assert_one_line_error(run("quantir-opt", truncated), "truncated.onnx")


def test_unsupported_ops_listed_together(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Sin", ["x"], ["a"], name="sin_1"),
             helper.make_node("Cos", ["a"], ["b"], name="cos_1"),
             helper.make_node("Sin", ["b"], ["y"], name="sin_2")]
    path = make_model(tmp_path / "trig.onnx", nodes, [x], [y])
    assert_one_line_error(run("quantir-opt", path), "Cos (nodes 'cos_1')",
                          "Sin (nodes 'sin_1', 'sin_2')")


def test_unresolvable_dynamic_shape(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", "seq"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq"])
    path = make_model(tmp_path / "dyn.onnx", [helper.make_node("Relu", ["tokens"], ["y"])],
                      [x], [y])
    assert_one_line_error(run("quantir-opt", path), "'tokens' dimension 1 ('seq')",
                          "--input-shape tokens=")
    ok = run("quantir-opt", path, "--input-shape", "tokens=2,7")
    assert ok.returncode == 0 and "tensor<2x7xf32>" in ok.stdout


@pytest.mark.parametrize("array, fragment", [
    (np.zeros((1, 1, 8, 8), np.float64), "dtype float64"),
    (np.zeros((1, 8, 8), np.float32), "has shape [1, 8, 8]"),
])
def test_wrong_feed(tmp_path: Path, array: np.ndarray, fragment: str) -> None:
    feed = tmp_path / "x.npy"
    np.save(feed, array)
    model = tmp_path / "cnn.mlir"
    assert run("quantir-opt", CNN, "--print-large-constants", "-o", model).returncode == 0
    out = tmp_path / "out"
    assert_one_line_error(run("quantir", "run", model, "--input", f"input={feed}", "-o", out),
                          fragment)
    assert not out.exists()


def test_wrong_feed_name(tmp_path: Path) -> None:
    result = run("quantir", "run", CNN, "--input", f"image={DATA / 'digits_sample.npy'}",
                 "-o", tmp_path / "out")
    assert_one_line_error(result, "unknown input 'image'", "'input'")


@pytest.mark.parametrize("pipeline", ["fold-constants{", "no-such-pass", "cse{bogus=1}"])
def test_bad_pipeline(tmp_path: Path, pipeline: str) -> None:
    out = tmp_path / "o.mlir"
    assert_one_line_error(run("quantir-opt", CNN, "-p", pipeline, "-o", out), "pipeline")
    assert not out.exists()


def test_invalid_ir_text(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mlir"
    bad.write_text("func.func @main(%x: tensor<2xf32>) -> tensor<2xf32> {\n"
                   "  %y = nn.relu %x {onnx_name = 'r'} : (tensor<2xf32>) -> tensor<2xf32>\n"
                   "  func.return %y : tensor<2xf32>\n}\n")
    out = tmp_path / "o.mlir"
    assert_one_line_error(run("quantir-opt", bad, "-o", out), "bad.mlir:2")
    assert not out.exists()
