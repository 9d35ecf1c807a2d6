"""Target descriptions (quantir/targets/*.toml): every shipped file loads, a malformed
one fails with file:line, and the lookups legality relies on."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantir.errors import TargetError
from quantir.targets import (
    DEFAULT_TARGET,
    Mode,
    available_targets,
    load_target,
    op_kinds,
    target_path,
)

SHIPPED = ("cpu-ref", "tflite-int8", "hailo8", "qnn-htp", "sima-mla", "horizon-j6")

VALID = """\
name = "npu"
description = "a test NPU"
rounding = ["tflite"]
activation_signedness = "signed"

[fallback]
where = "host"
kinds = ["softmax"]

[[conversion]]
from = "i16"
to = "i8"

[[op]]
kinds = ["conv", "matmul"]
modes = ["a8_w8", "a16_w8"]
per_channel = true

[[op]]
kinds = ["add"]
modes = ["a8_w8"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "npu.toml"
    path.write_text(text)
    return path


def test_the_shipped_targets_are_there() -> None:
    assert set(SHIPPED) <= set(available_targets())
    assert DEFAULT_TARGET == "cpu-ref"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_target_loads(name: str) -> None:
    target = load_target(name)
    assert target.name == name
    assert target.path == target_path(name)
    assert target.ops and target.rounding
    assert "not a" in target.description or name == "cpu-ref"  # vendor ones say they model docs
    for rule in target.ops:
        assert rule.line > 1
        if name != "cpu-ref":
            assert rule.note, f"{name}.toml:{rule.line}: a vendor rule cites its source above it"


def test_cpu_ref_runs_everything() -> None:
    target = load_target("cpu-ref")
    for kind in op_kinds():
        rule = target.rule(kind)
        assert rule is not None and rule.allows(Mode(16, 4, 8))
        assert target.falls_back(kind)
    assert target.conversion((16, True), (8, False)) is not None
    assert target.signedness_ok(True) and target.signedness_ok(False)


def test_hailo8_models_the_forum_thread() -> None:
    hailo = load_target("hailo8")
    # conv, depthwise, dense (gemm / matmul with weights) and activations take a16_w16 ...
    for kind in ("conv", "depthwise_conv", "gemm", "matmul", "sigmoid"):
        assert hailo.rule(kind).allows(Mode(16, 16, 16)), kind  # type: ignore[union-attr]
    # ... a matmul of two activations, the softmax and elementwise ops do not
    for kind in ("batch_matmul", "softmax", "add", "mul"):
        assert not hailo.rule(kind).allows(Mode(16, 16, 16)), kind  # type: ignore[union-attr]
    # the rejected precision_change of the forum: 16 -> 8 bits; 8 -> 16 exists
    assert hailo.conversion((16, False), (8, False)) is None
    assert hailo.conversion((8, False), (16, False)) is not None
    assert not hailo.signedness_ok(True)
    assert not hailo.falls_back("softmax")
    assert not hailo.rule("conv").per_channel  # type: ignore[union-attr]


def test_vendor_precision_tables() -> None:
    sima, horizon = load_target("sima-mla"), load_target("horizon-j6")
    assert sima.rule("conv").allows(Mode(16, 8, 16))  # type: ignore[union-attr]
    assert not sima.rule("conv").allows(Mode(16, 16, 16))  # weights fixed int8
    assert not sima.rule("transpose").allows(Mode(16, 16, 16))  # Transpose: 16-bit No
    assert sima.rule("softmax").allows(Mode(16, 16, 16))  # Softmax: 16-bit Yes
    assert sima.falls_back("div")
    assert not horizon.rule("conv").allows(Mode(16, 16, 16))  # no double int16 on J6M
    assert horizon.rule("conv").allows(Mode(16, 8, 16))  # type: ignore[union-attr]
    assert not horizon.falls_back("conv") and horizon.falls_back("softmax")
    assert load_target("tflite-int8").conversions == ()


def test_refined_kinds_use_their_base_rule(tmp_path: Path) -> None:
    target = load_target(write(tmp_path, VALID))
    assert target.rule("depthwise_conv") is target.rule("conv")
    assert target.rule("batch_matmul") is target.rule("matmul")
    assert target.rule("softmax") is None
    assert target.falls_back("softmax") and not target.falls_back("add")
    assert target.label.endswith("npu.toml")
    assert target.where(target.ops[1].line) == f"{target.path}:19"


@pytest.mark.parametrize(("edit", "line", "fragment"), [
    (lambda t: t.replace('modes = ["a8_w8"]\n', 'modes = ["a8_w9"]\n'), 21, "a8_w9"),
    (lambda t: t.replace("per_channel = true", "per_channel = 1"), 17, "per_channel"),
    (lambda t: t.replace('kinds = ["add"]', 'kinds = ["addd"]'), 20, "unknown op kind 'addd'"),
    (lambda t: t.replace('kinds = ["add"]', 'kinds = ["conv"]'), 20, "already has a rule"),
    (lambda t: t.replace('to = "i8"', 'to = "f8"'), 12, "not a storage type"),
    (lambda t: t.replace('rounding = ["tflite"]', 'rounding = ["nearest"]'), 3, "nearest"),
    (lambda t: t.replace('activation_signedness = "signed"', 'activation_signedness = "both"'),
     4, "both"),
    (lambda t: t.replace("per_channel = true", "per_channel = true\nbias = 32"), 18,
     "unknown key 'bias'"),
    (lambda t: t.replace('name = "npu"\n', ""), 1, "'name' is missing"),
    (lambda t: t.replace('kinds = ["conv", "matmul"]', 'kinds = ["conv", "matmul"'), 16,
     "TOML syntax error"),
])
def test_a_malformed_target_names_file_and_line(tmp_path: Path, edit, line: int,  # noqa: ANN001
                                                fragment: str) -> None:
    path = write(tmp_path, edit(VALID))
    with pytest.raises(TargetError) as caught:
        load_target(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message, message
    assert "\n" not in message


def test_unknown_target_lists_the_known_ones() -> None:
    with pytest.raises(TargetError, match="unknown target 'hailo9'; known targets: cpu-ref"):
        load_target("hailo9")
    with pytest.raises(TargetError, match="no such target file"):
        load_target("missing/npu.toml")
