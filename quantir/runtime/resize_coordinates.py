"""ONNX Resize coordinates, shared by the float kernels and the integer reference.

Input coordinates are computed in float32 and nearest indices rounded as
onnxruntime does, so the float engine and the integer program sample the same pixels.
"""

from __future__ import annotations

import numpy as np

TRANSFORMS: tuple[str, ...] = ("half_pixel", "pytorch_half_pixel", "align_corners",
                               "asymmetric", "tf_half_pixel_for_nn")
NEAREST_MODES: tuple[str, ...] = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def source_coordinates(out_len: int, in_len: int, scale: float, transform: str) -> np.ndarray:
    """Input coordinates of the output positions along one axis (float32)."""
    x = np.arange(out_len, dtype=np.float32)
    s = np.float32(scale)
    if transform in ("half_pixel", "pytorch_half_pixel"):
        if transform == "pytorch_half_pixel" and out_len <= 1:
            return np.zeros(out_len, np.float32)
        return (x + np.float32(0.5)) / s - np.float32(0.5)
    if transform == "align_corners":
        if out_len <= 1:
            return np.zeros(out_len, np.float32)
        return x * np.float32(in_len - 1) / np.float32(out_len - 1)
    if transform == "asymmetric":
        return x / s
    if transform == "tf_half_pixel_for_nn":
        return (x + np.float32(0.5)) / s
    raise ValueError(f"Resize coordinate transformation '{transform}' is not supported "
                     f"(expected one of {', '.join(TRANSFORMS)})")


def nearest_index(coords: np.ndarray, in_len: int, rounding: str) -> np.ndarray:
    """The input index each coordinate takes in nearest mode, clipped to the input."""
    wide = coords.astype(np.float64)
    rounded = np.sign(wide) * np.floor(np.abs(wide) + 0.5)  # std::round, as onnxruntime
    if rounding == "round_prefer_floor":
        index = np.where(wide == np.trunc(wide) + 0.5, np.floor(wide), rounded)
    elif rounding == "round_prefer_ceil":
        index = rounded
    elif rounding == "floor":
        index = np.floor(wide)
    elif rounding == "ceil":
        index = np.ceil(wide)
    else:
        raise ValueError(f"Resize nearest_mode '{rounding}' is not supported "
                         f"(expected one of {', '.join(NEAREST_MODES)})")
    return np.clip(index, 0, in_len - 1).astype(np.intp)
