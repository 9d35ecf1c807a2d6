"""legality / legalize: the forum case's accuracy, the CLI and the Python entry points.

The golden tests (tests/filecheck/passes/legality_*.mlir, legalize_*.mlir) pin the
diagnostics and the repaired IR; these tests pin numbers and behaviour.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import quantir
from quantir.errors import LegalityError, PipelineError
from quantir.ir import print_module
from quantir.passes.legality import check
from quantir.passes.legalize import legalize
from quantir.passes.presets import quantize_model
from quantir.passes.qconfig import QuantConfig, QuantirWarning
from quantir.targets import load_target
from tests.conftest import DATA
from tests.unit.test_cli import run

CNN = DATA / "digits_cnn.onnx"
VIT = DATA / "tiny_vit.onnx"
CALIB = DATA / "digits_calib.npz"
FORUM_SCRIPT = DATA / "configs" / "vit_a16.alls"


def noisy_draws(inputs: np.ndarray, labels: np.ndarray, sigma: float, draws: int,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`draws` copies of every test image with Gaussian pixel noise (clipped to the
    pixel range [0, 1]), so a top-1 difference resolves finer than one image."""
    rng = np.random.default_rng(seed)
    noisy = [np.clip(inputs + rng.normal(0, sigma, inputs.shape), 0, 1) for _ in range(draws)]
    return np.concatenate(noisy).astype(np.float32), np.tile(labels, draws)


def test_forum_case_legalized_on_hailo8_keeps_the_a16_accuracy() -> None:
    """The forum script (conv / dense / matmul in a16_w16, softmax a8_w8) legalized for
    hailo8, against every layer in a16_w16.

    On the 450 clean digits test images (one image = 0.22 points): all-a16_w16 95.33%
    (429), the forum script as written 95.11% (428; hailo8 cannot run it), legalized
    95.11% (428). The one image between them (#362) has a float logit margin of 0.08,
    so the clean set cannot resolve the issue's 0.2-point bound. Ten noisy draws per
    test image (sigma 0.05, under the data's 1/16 pixel step; fp32 95.09%) resolve
    0.02 points: all-a16_w16 95.11%, legalized 95.09% (measured the same way with
    sigma 0.05 / 0.03 and other seeds: gaps -0.02, +0.07, +0.04 points)."""
    test = np.load(DATA / "digits_test.npz")
    clean, labels = test["input"], test["label"]
    noisy, noisy_labels = noisy_draws(clean, labels, sigma=0.05, draws=10, seed=0)
    inputs = np.concatenate([clean, noisy])
    batch = {"input": list(inputs.shape)}  # one batched run per module

    def top1_clean_and_noisy(module) -> tuple[float, float]:
        predicted = quantir.Session(module).run({"input": inputs})["logits"].argmax(axis=1)
        return (float((predicted[:len(clean)] == labels).mean()),
                float((predicted[len(clean):] == noisy_labels).mean()))

    a16 = top1_clean_and_noisy(
        quantize_model(VIT, CALIB, QuantConfig.build(precision="a16_w16"), batch).module)
    config = QuantConfig.build(script=FORUM_SCRIPT)
    result = quantize_model(VIT, CALIB, config, batch)
    hailo8 = load_target("hailo8")
    before = check(result.module, hailo8, config)
    assert before.counts()["precision-change"] == 9
    report, left = legalize(result.module, hailo8, config)
    result.module.verify()
    assert report.legal, left
    assert check(result.module, hailo8).legal
    legal = top1_clean_and_noisy(result.module)
    print(f"forum case top-1 (clean, noisy): all-a16_w16 {a16}, legalized for hailo8 {legal}")
    assert legal[0] >= a16[0] - 1 / len(labels) - 1e-9
    assert legal[1] >= a16[1] - 0.002


def test_signedness_repair_is_exact() -> None:
    """qnn-htp stores activations unsigned: legalize only moves zero points, so the
    annotated module computes the same numbers."""
    result = quantize_model(CNN, CALIB, QuantConfig.build(precision="a8_w8"))
    x = np.load(DATA / "digits_sample.npy")[:1]
    before = quantir.Session(result.module).run({"input": x})["logits"]
    report, _ = legalize(result.module, load_target("qnn-htp"))
    assert report.legal and [c.kind for c in report.changes] == ["signedness"]
    assert "uniform<u8:" in print_module(result.module)
    assert "uniform<i8:" not in print_module(result.module)  # activations; weights stay i8
    after = quantir.Session(result.module).run({"input": x})["logits"]
    np.testing.assert_array_equal(after, before)


def test_legal_module_is_left_alone() -> None:
    result = quantize_model(CNN, CALIB, QuantConfig.build(precision="a8_w8"))
    text = print_module(result.module)
    for target in ("cpu-ref", "sima-mla", "horizon-j6"):
        report, left = legalize(result.module, load_target(target))
        assert report.legal and not report.changes and not left
        assert print_module(result.module) == text


def test_pipeline_passes_report_raise_and_write(tmp_path: Path) -> None:
    result = quantize_model(CNN, CALIB, QuantConfig.build(precision="a8_w8"))
    report = tmp_path / "report.json"
    with pytest.raises(LegalityError) as caught:
        quantir.compile(result.module, f"legality{{target=hailo8 report=\"{report}\"}}")
    assert caught.value.summary.startswith("hailo8: ")
    assert all("hailo8.toml:" in line for line in caught.value.diagnostics)
    data = json.loads(report.read_text())
    assert data["legal"] is False and data["summary"]["per-channel"] >= 1
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quantir.compile(result.module, "legality{target=hailo8 mode=report}")
    assert any(isinstance(w.message, QuantirWarning) for w in seen)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quantir.compile(result.module, "legalize{target=hailo8},legality{target=hailo8}")
    assert any("legalize{target=hailo8}" in str(w.message) for w in seen)
    with pytest.raises(PipelineError, match="mode=loud is not valid"):
        quantir.compile(result.module, "legality{mode=loud}")


def test_cli_stops_before_writing_when_illegal(tmp_path: Path) -> None:
    out, report = tmp_path / "out", tmp_path / "report.json"
    result = run("quantir", "quantize", CNN, "--calib", CALIB, "-o", out, "--precision",
                 "a16_w16", "--target", "tflite-int8", "--report", report)
    assert result.returncode == 1
    assert not out.exists()
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("quantir: error: tflite-int8: ")
    assert "rerun with --legalize" in lines[0]
    assert len(lines) == 1 + len(json.loads(report.read_text())["diagnostics"])
    assert all(line.startswith("quantir: error: ") and "fix: " in line for line in lines[1:])


def test_cli_legalize_writes_a_legal_module(tmp_path: Path) -> None:
    out, report = tmp_path / "out", tmp_path / "report.json"
    result = run("quantir", "quantize", CNN, "--calib", CALIB, "-o", out, "--precision",
                 "a16_w16", "--target", "tflite-int8", "--legalize", "--report", report)
    assert result.returncode == 0, result.stderr
    assert "legalize: nn.conv" in result.stdout
    assert "tflite-int8: legal (" in result.stdout
    assert (out / "model.q.mlir").is_file() and (out / "model.qir.mlir").is_file()
    data = json.loads(report.read_text())
    assert data["legal"] and data["changes"]
    assert "tflite" in (out / "model.qir.mlir").read_text()  # the target's rounding
    checked = run("quantir-opt", out / "model.q.mlir", "-p", "legality{target=tflite-int8}",
                  "-o", tmp_path / "checked.mlir")
    assert checked.returncode == 0, checked.stderr


def test_cli_rounding_must_be_the_targets(tmp_path: Path) -> None:
    result = run("quantir", "quantize", CNN, "--calib", CALIB, "-o", tmp_path / "out",
                 "--target", "sima-mla", "--rounding", "single")
    assert result.returncode == 1 and not (tmp_path / "out").exists()
    assert "--rounding single is not a rounding mode of the target" in result.stderr
    assert "pass --rounding tflite" in result.stderr


def test_cli_lists_and_shows_targets() -> None:
    listed = run("quantir", "targets")
    assert listed.returncode == 0, listed.stderr
    for name in ("cpu-ref", "tflite-int8", "hailo8", "qnn-htp", "sima-mla", "horizon-j6"):
        assert name in listed.stdout
    shown = run("quantir", "targets", "show", "hailo8")
    assert shown.returncode == 0, shown.stderr
    assert "u8 -> u16  [hailo8.toml:" in shown.stdout
    assert "batch_matmul: a8_w8  [hailo8.toml:" in shown.stdout
    assert "forum line 138" in shown.stdout  # the rule's cited source
    missing = run("quantir", "targets", "show", "hailo9")
    assert missing.returncode == 1 and "unknown target 'hailo9'" in missing.stderr


def test_integer_program_keeps_the_float_layers_legalize_chose() -> None:
    """tflite-int8 has no integer layer_norm, div or erf: legalize moves the tiny ViT's
    to float, the integer program keeps them in float (quantizing their outputs at the
    8 bits their readers write), and the program is legal on tflite-int8 too."""
    from quantir.lowering.lower_to_int import lower_to_int

    config = QuantConfig.build(precision="a8_w8")
    result = quantize_model(VIT, CALIB, config)
    tflite = load_target("tflite-int8")
    report, _ = legalize(result.module, tflite, config)
    moved = sorted(change.name for change in report.changes if change.kind == "float-fallback")
    assert len(moved) == 9 and all(n.endswith(("LayerNormalization", "Div", "Erf"))
                                   for n in moved)
    program = lower_to_int(result.module, "tflite")
    text = print_module(program)
    assert "qi.layernorm" not in text and text.count("= nn.layer_norm") == 5
    assert "!q.uniform<i16" not in text  # no 16-bit edge tflite-int8 cannot convert
    verdict = check(program, tflite)
    assert verdict.legal and verdict.integer_program
    assert "precision modes are checked on the annotated module" in verdict.summary()
    x = np.load(DATA / "digits_test.npz")["input"][:100]
    simulated = quantir.Session(result.module).run({"input": x})["logits"].argmax(axis=1)
    integer = quantir.Session(program).run({"input": x})["logits"].argmax(axis=1)
    assert np.mean(simulated == integer) >= 0.98


def test_quantize_checks_the_integer_program_too() -> None:
    """`quantir quantize --target T` checks the program it writes as well (IR level 3):
    lowered with a rounding tflite-int8 lacks, the digits CNN's program is refused."""
    import argparse

    from quantir.lowering.lower_to_int import lower_to_int
    from quantir.tools.targets_cli import check_program

    result = quantize_model(CNN, CALIB, QuantConfig.build(precision="a8_w8"))
    check_program(lower_to_int(result.module, "tflite"), argparse.Namespace(target="tflite-int8"))
    with pytest.raises(LegalityError) as caught:
        check_program(lower_to_int(result.module, "single"),
                      argparse.Namespace(target="tflite-int8"))
    assert "the integer program has" in caught.value.summary
    assert all("rounding single" in line for line in caught.value.diagnostics)
