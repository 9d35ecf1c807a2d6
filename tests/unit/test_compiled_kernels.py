"""The Cython float kernels agree with the numpy kernels, and quantir works without them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantir.runtime import float_kernels

compiled = pytest.importorskip("quantir.runtime._float_kernels",
                               reason="the Cython extension is not built")


@settings(max_examples=150, deadline=None)
@given(channels=st.integers(1, 6), multiplier=st.integers(1, 3), height=st.integers(1, 12),
       width=st.integers(1, 12), kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       strides=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dilations=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pads=st.tuples(*[st.integers(0, 3)] * 4), batch=st.integers(1, 2),
       with_bias=st.booleans(), seed=st.integers(0, 2**31))
def test_depthwise_matches_numpy(channels, multiplier, height, width, kernel, strides, dilations,
                                 pads, batch, with_bias, seed) -> None:
    effective = [dilations[i] * (kernel[i] - 1) + 1 for i in range(2)]
    padded = [height + pads[0] + pads[2], width + pads[1] + pads[3]]
    if any(padded[i] < effective[i] for i in range(2)):
        return
    out = [(padded[i] - effective[i]) // strides[i] + 1 for i in range(2)]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, channels, height, width)).astype(np.float32)
    w = rng.standard_normal((channels * multiplier, 1, *kernel)).astype(np.float32)
    b = rng.standard_normal(channels * multiplier).astype(np.float32)
    plan = float_kernels._window_plan((height, width), kernel, strides, pads[:2], dilations, out)
    reference = float_kernels._depthwise_conv(plan, x.shape, (batch, channels * multiplier, *out),
                                              multiplier, np.dtype(np.float32))
    args = (x, w, b) if with_bias else (x, w)
    expected = reference(*args)
    actual = compiled.depthwise_conv2d(x, w, b if with_bias else np.zeros(0, np.float32),
                                       multiplier, *strides, pads[0], pads[1], *dilations, *out)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_package_works_without_the_extension() -> None:
    """With the extension missing, quantir warns once and runs on the numpy kernels."""
    script = (
        "import sys, warnings\n"
        "sys.modules['quantir.runtime._float_kernels'] = None  # as if it never built\n"
        "warnings.simplefilter('always')\n"
        "import numpy as np, quantir\n"
        "s = quantir.Session('tests/data/digits_cnn.onnx')\n"
        "y = s.run({'input': np.load('tests/data/digits_sample.npy')[:1]})['logits']\n"
        "print(int(y.argmax()))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"
    assert "Cython float kernels are not built" in result.stderr


@settings(max_examples=100, deadline=None)
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 5), st.integers(1, 37)),
       kind=st.sampled_from([0, 1, 2, 3]), with_bias=st.booleans(), seed=st.integers(0, 2**31))
def test_bias_activation_matches_numpy(shape, kind, with_bias, seed) -> None:
    """One-pass bias + activation equals numpy's bias add then activation, bit for bit
    (ReLU may differ in the sign of a zero result), NaN and infinities included."""
    rng = np.random.default_rng(seed)
    y = (rng.standard_normal(shape) * 8).astype(np.float32)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 3.0, -3.0], np.float32)
    y.reshape(-1)[: min(y.size, 7)] = specials[: min(y.size, 7)]
    bias = rng.standard_normal(shape[1]).astype(np.float32)
    expected = y.copy()
    if with_bias:
        expected += bias.reshape(-1, 1)
    if kind == 1:
        np.maximum(expected, np.float32(0), out=expected)
    elif kind == 2:
        np.clip(expected, -1.5, 6, out=expected)
    elif kind == 3:
        with np.errstate(invalid="ignore"):  # -inf * 0 is NaN, as in onnxruntime
            float_kernels._inplace_hard_swish(expected)
    actual = y.copy()
    compiled.bias_activation(actual, bias if with_bias else np.zeros(0, np.float32), kind,
                             -1.5, 6)
    same = (actual.view(np.int32) == expected.view(np.int32)) | (
        (actual == 0) & (expected == 0))
    assert same.all(), (actual[~same], expected[~same])
