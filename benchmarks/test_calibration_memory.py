"""Peak memory of each range observer over 50 vs 1000 batches of a (32, 384) float32 tensor.

    pytest benchmarks/test_calibration_memory.py --benchmark-enable -s

Memory is not time: the observers must not grow with the number of batches (the peer
calibrators' pain point), so the 1000-batch peak must stay within 10 % of the 50-batch
peak. Timings are reported, never asserted.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from quantir.passes.observers import METHODS, make_observer

SHAPE = (32, 384)
POOL = 8


def peak_bytes(method: str, symmetric: bool, batches: int) -> int:
    """Peak traced allocation while observing `batches` batches and computing the range."""
    rng = np.random.default_rng(0)
    pool = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(POOL)]
    tracemalloc.start()
    try:
        observer = make_observer(method, symmetric=symmetric)
        for i in range(batches):
            # A slowly widening scale makes the histograms grow (re-bin) now and then.
            observer.update(pool[i % POOL] * np.float32(1 + i / batches))
        observer.range()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("symmetric", [False, True], ids=["asymmetric", "symmetric"])
@pytest.mark.parametrize("method", METHODS)
def test_observer_peak_memory_does_not_grow_with_batches(benchmark, method: str,
                                                         symmetric: bool) -> None:
    peaks: dict[int, int] = {}

    def measure() -> None:
        for batches in (50, 1000):
            peaks[batches] = peak_bytes(method, symmetric, batches)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(peak_50_batches=peaks[50], peak_1000_batches=peaks[1000])
    print(f"\n{method:>15} {'symmetric' if symmetric else 'asymmetric':>10}: peak "
          f"{peaks[50] / 1024:8.1f} KiB over 50 batches, {peaks[1000] / 1024:8.1f} KiB over 1000")
    assert peaks[1000] <= 1.10 * peaks[50], peaks
