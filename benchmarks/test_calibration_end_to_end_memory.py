"""Peak memory of calibrating the digits CNN end to end: 50 vs 1000 samples.

    pytest benchmarks/test_calibration_end_to_end_memory.py --benchmark-enable -s

The whole `calibrate` pass runs (`quantir.compile(module, "calibrate{method=M
calibset_size=N}", calibration=source)` on the digits CNN imported at batch 1): the data
source, the float engine with its observer hook, the observers and writing the ranges.
tracemalloc traces the pass only: the model is imported and an .npy source written
before tracing starts. Two untraced 50-sample calibrations first pay for what the first
two passes in a process allocate once whatever their size (lazy imports: about 4.6 MiB;
then about 230 KiB of xDSL's issubclass caches). `gc.collect()` right before tracing
gives every measurement the same start (it also empties CPython's free lists, see the
README).

The samples are the 450 test digits, repeated and perturbed deterministically (sample i
is digit i mod 450 times a gain in [0.9, 1.1) plus an offset in [-0.05, 0.05), both
depending on i), served by a lazy generator (one sample made at a time; such a source
needs calibset_size, which the pipeline passes) or from an .npy file in tmp_path
(which the pass memory-maps and copies out a batch at a time).

Memory is not time: calibration must not grow with the number of samples, so the
1000-sample peak must stay within 10 % of the 50-sample peak. When it does not, the
test prints the allocation sites that grew (tracemalloc snapshots at the end of each
run, compared by line). Timings are reported, never asserted.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import quantir
from tests.conftest import DATA

METHODS = ("minmax", "moving_average", "mse", "entropy", "percentile")
SIZES = (50, 1000)
SOURCES = ("generator", "npy")


def digits_sample(i: int, base: np.ndarray) -> np.ndarray:
    """Sample i: test digit i mod 450 with a gain in [0.9, 1.1) and an offset in [-0.05, 0.05)."""
    gain = np.float32(0.9 + 0.2 * ((i * 37) % 100) / 100)
    offset = np.float32(-0.05 + 0.1 * ((i * 53) % 100) / 100)
    return base[i % len(base)] * gain + offset


def generator(count: int, base: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
    for i in range(count):
        yield {"input": digits_sample(i, base)}


def calibrate(method: str, source_kind: str, count: int, tmp_path: Path, trace: bool) \
        -> tuple[int, float, tracemalloc.Snapshot | None]:
    """(peak traced bytes, seconds, a snapshot at the end) of one calibrate pass."""
    base = np.load(DATA / "digits_test.npz")["input"]  # (450, 1, 8, 8)
    module = quantir.import_onnx(DATA / "digits_cnn.onnx", {"input": [1, 1, 8, 8]})
    if source_kind == "npy":
        source: object = tmp_path / f"calibration_{count}.npy"
        np.save(source, np.stack([digits_sample(i, base) for i in range(count)]))
    else:
        source = generator(count, base)
    pipeline = f"calibrate{{method={method} calibset_size={count}}}"
    gc.collect()
    if trace:
        tracemalloc.start()
    try:
        start = time.perf_counter()
        quantir.compile(module, pipeline, calibration=source)
        seconds = time.perf_counter() - start
        if not trace:
            return 0, seconds, None
        return tracemalloc.get_traced_memory()[1], seconds, tracemalloc.take_snapshot()
    finally:
        if trace:
            tracemalloc.stop()


def growth_report(small: tracemalloc.Snapshot, large: tracemalloc.Snapshot, top: int = 5) -> str:
    """The allocation sites whose blocks alive at the end of the run grew most."""
    return "\n".join(f"  {stat.size_diff / 1024:+8.1f} KiB in {stat.count_diff:+5d} blocks at "
                     f"{stat.traceback[0].filename}:{stat.traceback[0].lineno}"
                     for stat in large.compare_to(small, "lineno")[:top])


@pytest.mark.filterwarnings("ignore::quantir.passes.calibrate.CalibrationWarning")
@pytest.mark.parametrize("source_kind", SOURCES)
@pytest.mark.parametrize("method", METHODS)
def test_calibration_peak_memory_does_not_grow_with_samples(benchmark, tmp_path: Path,
                                                            method: str, source_kind: str) -> None:
    peaks: dict[int, int] = {}
    seconds: dict[int, float] = {}
    snapshots: dict[int, tracemalloc.Snapshot | None] = {}

    def measure() -> None:
        # Warm-up: the first two passes in a process also pay one-time allocations
        # (lazy imports; then xDSL's issubclass caches), whatever their size.
        for _ in range(2):
            calibrate(method, source_kind, SIZES[0], tmp_path, trace=False)
        for count in SIZES:
            peaks[count], seconds[count], snapshots[count] = calibrate(
                method, source_kind, count, tmp_path, trace=True)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(model="digits_cnn", method=method, source=source_kind,
                                **{f"peak_bytes_{n}": peaks[n] for n in SIZES},
                                **{f"seconds_{n}": seconds[n] for n in SIZES})
    small, large = SIZES
    print(f"\n{method:>15} {source_kind:>9}: peak {peaks[small] / 1024:7.1f} KiB over {small} "
          f"samples ({seconds[small]:.2f} s), {peaks[large] / 1024:7.1f} KiB over {large} "
          f"({seconds[large]:.2f} s), ratio {peaks[large] / peaks[small]:.3f}")
    if peaks[large] > 1.10 * peaks[small] and snapshots[small] and snapshots[large]:
        print(growth_report(snapshots[small], snapshots[large]))
    assert peaks[large] <= 1.10 * peaks[small], peaks
