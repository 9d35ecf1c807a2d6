"""Import time and float latency, quantir beside onnxruntime fp32, one thread.

    pytest benchmarks --benchmark-enable
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import quantir
from tests.conftest import DATA, PRETRAINED, pretrained_path, random_feeds

MODELS = ["digits_cnn", *sorted(PRETRAINED)]


def model_path_and_shapes(name: str):
    if name in PRETRAINED:
        return pretrained_path(name), PRETRAINED[name].input_shapes
    return DATA / f"{name}.onnx", {"input": [1, 1, 8, 8]}


def onnxruntime_session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", MODELS)
def test_import_quantir(benchmark, name: str) -> None:
    path, shapes = model_path_and_shapes(name)
    benchmark.extra_info.update(model=name, measure="import", engine="quantir")
    benchmark.pedantic(quantir.import_onnx, args=(path, shapes), rounds=3, iterations=1)


@pytest.mark.parametrize("name", MODELS)
def test_import_onnxruntime(benchmark, name: str) -> None:
    path, _ = model_path_and_shapes(name)
    benchmark.extra_info.update(model=name, measure="import", engine="onnxruntime")
    benchmark.pedantic(onnxruntime_session, args=(path,), rounds=3, iterations=1)


def quantir_runner(name: str):
    path, shapes = model_path_and_shapes(name)
    session = quantir.Session(path, shapes)
    feeds = random_feeds(shapes, dict(zip(session.input_names, session.input_dtypes,
                                          strict=True)))
    return lambda: session.run(feeds)


def onnxruntime_runner(name: str):
    path, shapes = model_path_and_shapes(name)
    session = onnxruntime_session(path)
    dtypes = {i.name: np.dtype(np.float32 if "float" in i.type else np.int64)
              for i in session.get_inputs()}
    feeds = random_feeds(shapes, dtypes)
    return lambda: session.run(None, feeds)


# The two engines of one model run back to back, so that drift in this machine's
# speed over the run moves both figures of a ratio together.
@pytest.mark.parametrize(("name", "engine"),
                         [(name, engine) for name in MODELS for engine in ("quantir", "onnxruntime")])
def test_float_latency(benchmark, name: str, engine: str) -> None:
    run = quantir_runner(name) if engine == "quantir" else onnxruntime_runner(name)
    benchmark.extra_info.update(model=name, measure="float latency", engine=engine)
    outputs = benchmark.pedantic(run, rounds=30, iterations=1, warmup_rounds=2)
    assert outputs is not None
