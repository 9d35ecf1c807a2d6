"""Benchmark plumbing: one thread everywhere, and a ratio table at the end of the run.

Each benchmark sets `benchmark.extra_info` to {"model", "measure", "engine"}; for
every (model, measure) measured by both quantir and onnxruntime, the summary prints
the medians and quantir / onnxruntime.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def one_thread():
    with threadpool_limits(limits=1):
        yield


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ANN001
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    medians: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for bench in session.benchmarks:
        info = bench.extra_info
        if bench.stats is None or not {"model", "measure", "engine"} <= set(info) \
                or not bench.stats.data:  # a run that raised has no timings
            continue
        medians[(info["model"], info["measure"])][info["engine"]] = bench.stats.median
    if not medians:
        return
    write = terminalreporter.write_line
    write("")
    write("quantir vs onnxruntime (median seconds, 1 thread)")
    write(f"{'model':<20} {'measure':<16} {'quantir':>10} {'onnxruntime':>12} {'ratio':>8}")
    for (model, measure), engines in sorted(medians.items()):
        ours, peer = engines.get("quantir"), engines.get("onnxruntime")
        ratio = f"{ours / peer:8.2f}" if ours and peer else "       -"
        write(f"{model:<20} {measure:<16} {ours or float('nan'):10.4f} "
              f"{peer or float('nan'):12.4f} {ratio}")
