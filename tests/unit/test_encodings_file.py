"""AIMET / QNN encodings JSON: the seed document's examples, validation, write/load round trips."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xdsl.dialects.builtin import f16, f32, i8

from quantir.dialects.q import PerAxisQuantizedType, UniformQuantizedType
from quantir.dialects.q_math import (
    Encoding,
    dequantize_array,
    encoding_from_range,
    quantize_array,
)
from quantir.errors import QuantirError
from quantir.passes.encodings_file import (
    TensorEncodingOverride,
    encoding_entry,
    entries_for_type,
    float_entry,
    load_overrides,
    parse_overrides,
    write_encodings,
)
from quantir.passes.qconfig import QuantirWarning
from tests.conftest import DATA

CONFIGS = DATA / "configs"


def quiet_load(path: Path) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_overrides(path)


def overrides_of(activation: dict | None = None, param: dict | None = None):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return parse_overrides({"activation_encodings": activation or {},
                                "param_encodings": param or {}}, "o.json")


def error_of(data: object) -> str:
    with pytest.raises(QuantirError) as caught:
        parse_overrides(data, "overrides.json")
    message = str(caught.value)
    assert "\n" not in message
    return message


def one(entry: dict, section: str = "activation_encodings", name: str = "conv1_out") -> dict:
    other = "param_encodings" if section == "activation_encodings" else "activation_encodings"
    return {section: {name: [entry]}, other: {}}


# -- the seed document's worked examples ------------------------------------------------------


def test_seed_quantization_example() -> None:
    """qnn-quantization.txt, "Quantization Example": input values [-1.8, -1.0, 0, 0.5]."""
    encoding = encoding_from_range(-1.8, 0.5, bits=8, signed=False)
    # "encoding-min is adjusted to -1.803922 and encoding-max to 0.496078"
    assert round(encoding.min, 6) == -1.803922
    assert round(encoding.max, 6) == 0.496078
    # "step size is 0.009020"
    assert round(encoding.scale, 6) == 0.009020
    # "offset is 200": the algorithm section's offset, round(-min/scale), is the zero point
    assert encoding.zero_point == 200
    # "quantized values are [0, 89, 200, 255]"
    values = quantize_array(np.array([-1.8, -1.0, 0.0, 0.5]), encoding.to_type())
    assert values.tolist() == [0, 89, 200, 255]
    # "dequantized values = [-1.8039, -1.0011, 0.0000, 0.4961]": the document prints four
    # decimals, rounding some and truncating others (-1.0011 is -111 * scale = -1.001176).
    back = dequantize_array(values, encoding.to_type())
    assert back.tolist() == pytest.approx([-1.8039, -1.0011, 0.0, 0.4961], abs=1e-4)
    assert back[1] == np.float32(-111 * encoding.scale)
    # The JSON "offset" has the other sign (float = (q + offset) * scale): -200.
    entry = encoding_entry(encoding)
    assert entry["offset"] == -200
    assert round(entry["min"], 6) == -1.803922  # type: ignore[arg-type]
    assert round(entry["max"], 6) == 0.496078  # type: ignore[arg-type]
    assert entry["scale"] == encoding.scale
    # On signed storage the zero point moves (72) and the JSON entry does not.
    signed = encoding_from_range(-1.8, 0.5, bits=8, signed=True)
    assert signed.zero_point == 72
    assert encoding_entry(signed) == entry


def test_seed_overrides_example() -> None:
    """The seed's "Quantization Overrides" example: min/max win over scale/offset."""
    with pytest.warns(QuantirWarning, match=r"qnn_overrides_example.json: 2 entries give "
                                            r"scale/offset that disagree with min/max \(first: "
                                            r"activation_encodings\[\"input:0\"\]\[0\]\); "
                                            r"quantir uses min/max, as QNN does"):
        overrides = load_overrides(CONFIGS / "qnn_overrides_example.json")
    assert overrides.names() == ["Conv1:0", "input:0", "Conv2d/weights"]
    assert overrides.version is None
    conv1 = overrides.activation("Conv1:0")
    assert conv1 is not None
    assert (conv1.bits, conv1.scales, conv1.offsets) == (8, (0.050288015993135454,), (0,))
    assert conv1.mins == (0.0,) and conv1.maxs == (12.82344407824954,)
    # "offset": 127 (positive) disagrees with min/max: -min/scale is 127.99999557
    assert overrides.activation("input:0").offsets == (-128,)  # type: ignore[union-attr]
    assert overrides.activation("input:0").scales == (0.007843206675594112,)  # type: ignore[union-attr]
    # "offset": 140: -min/scale is 140.92, so QNN's rule gives 141
    weights = overrides.param("Conv2d/weights")
    assert weights is not None and weights.offsets == (-141,)
    assert weights.scales[0] == pytest.approx(0.01490669485799974, rel=1e-12)
    assert overrides.param("input:0") is None and overrides.activation("Conv2d/weights") is None


def test_seed_per_channel_example() -> None:
    """The seed's "Per-channel Quantization Overrides", cases 1 and 2."""
    overrides = quiet_load(CONFIGS / "qnn_per_channel.json")
    case1 = overrides.param("features.9.conv.3.weight")  # type: ignore[attr-defined]
    # asymmetric, "offset": -103: the file's scale is kept exactly
    assert (case1.symmetric, case1.offsets, case1.scales) == \
        (False, (-103,), (0.019991940143061618,))
    assert case1.zero_points(signed=False) == (103,)
    assert case1.zero_points(signed=True) == (-25,)
    case2 = overrides.param("features.8.conv.3.weight")  # type: ignore[attr-defined]
    # symmetric, "offset": -128.0 (a float in the file), three output channels
    assert case2.per_channel and case2.num_channels == 3 and case2.symmetric
    assert case2.offsets == (-128, -128, -128)
    assert case2.scales == (0.005520610358771377, 0.004116586343509945, 0.005801794566507415)
    assert case2.zero_points() == (0, 0, 0)
    assert case2.zero_points(signed=False) == (128, 128, 128)
    assert case2.mins[0] == -0.7066381259227362  # -128 * scale: AIMET's symmetric min
    qtype = case2.to_type(axis=0)
    assert isinstance(qtype, PerAxisQuantizedType)
    assert qtype.scales == case2.scales and qtype.zero_points == (0, 0, 0)
    encodings = case2.encodings()
    assert encodings[1] == Encoding(0.004116586343509945, 0, 8, True, True)
    with pytest.raises(ValueError, match="3 per-channel encodings"):
        case2.encoding()


def test_seed_mixed_precision_example() -> None:
    """The seed's "Mixed Precision and FP16 Support" example: float and width-only entries."""
    overrides = quiet_load(CONFIGS / "qnn_mixed_precision.json")
    assert overrides.version == "0.5.0"  # type: ignore[attr-defined]
    conv2 = overrides.activation("conv2_1")  # type: ignore[attr-defined]
    assert conv2.is_float and conv2.bits == 32 and not conv2.has_range
    assert conv2.encoding() is None
    assert conv2.entries() == [{"bitwidth": 32, "dtype": "float"}]
    weight = overrides.param("conv3_w_0")  # type: ignore[attr-defined]
    assert (weight.is_float, weight.bits, weight.has_range) == (False, 8, False)
    assert weight.encoding() is None
    with pytest.raises(ValueError, match="gives no range"):
        weight.to_type()


# -- the forms of an entry --------------------------------------------------------------------


def test_scale_offset_form() -> None:
    overrides = overrides_of({"x": [{"bitwidth": 8, "scale": 0.5, "offset": -10}]},
                             {"w": [{"bitwidth": 4, "scale": 0.25, "offset": -8,
                                     "is_symmetric": True}]})
    x = overrides.activation("x")
    assert (x.mins, x.maxs) == ((-5.0,), (122.5,))
    assert x.encoding() == Encoding(0.5, -118, 8, True, False)
    assert x.encoding(signed=False) == Encoding(0.5, 10, 8, False, False)
    w = overrides.param("w")
    assert w.encoding() == Encoding(0.25, 0, 4, True, True)
    assert w.to_type() == UniformQuantizedType.get("i4", 0.25, 0)


@pytest.mark.parametrize(("low", "high", "expected"), [
    (5.0, 10.0, (0.0, 10.0)),  # "Inputs are strictly positive": encoding-min is set to 0.0
    (-20.0, -6.0, (-20.0, 0.0)),  # "Inputs are strictly negative": encoding-max is set to 0.0
])
def test_min_max_form_includes_zero(low: float, high: float,
                                    expected: tuple[float, float]) -> None:
    x = overrides_of({"x": [{"bitwidth": 8, "min": low, "max": high}]}).activation("x")
    assert x.mins[0] == pytest.approx(expected[0], abs=1e-12)
    assert x.maxs[0] == pytest.approx(expected[1], rel=1e-12)


def test_seed_shifted_range_example() -> None:
    """"e.g. input range = [-5.1, 5.1] ... The new encoding-min is -5.12 and the new
    encoding-max is 5.08 ... zero is now exactly representable by the fixed point value 128"."""
    x = overrides_of({"x": [{"bitwidth": 8, "min": -5.1, "max": 5.1}]}).activation("x")
    assert x.zero_points(signed=False) == (128,)
    assert round(x.mins[0], 2) == -5.12 and round(x.maxs[0], 2) == 5.08


def test_symmetric_min_max_form() -> None:
    overrides = overrides_of({"x": [{"bitwidth": 8, "min": -1.0, "max": 1.0,
                                     "is_symmetric": "True"}],
                              "y": [{"bitwidth": 8, "min": -1.0, "max": 0.5,
                                     "is_symmetric": "true"}]})
    x = overrides.activation("x")
    assert x.offsets == (-128,) and x.scales == (1.0 / 127,)  # |max| on the narrow grid
    y = overrides.activation("y")
    assert y.offsets == (-128,) and y.scales == (1.0 / 128,)  # AIMET's full grid covers -1


def test_width_only_entry() -> None:
    x = overrides_of({"x": [{"bitwidth": 16}]}).activation("x")
    assert (x.bits, x.is_float, x.has_range) == (16, False, False)
    assert x.entries() == [{"bitwidth": 16, "dtype": "int", "is_symmetric": "False"}]


# -- errors, each with its JSON path ----------------------------------------------------------


def entry_error(**fields: object) -> str:
    return error_of(one({"bitwidth": 8, "min": -1.0, "max": 1.0, **fields}))


@pytest.mark.parametrize(("fields", "expected"), [
    ({"bitwidth": 7},
     'overrides.json: activation_encodings["conv1_out"][0].bitwidth: expected one of 4, 8, 16, '
     '32, got 7'),
    ({"bitwidth": "8"},
     'activation_encodings["conv1_out"][0].bitwidth: expected a number, got the string "8"'),
    ({"bitwidth": 8.5}, '[0].bitwidth: expected an integer, got 8.5'),
    ({"bitwidth": True}, '[0].bitwidth: expected a number, got the boolean true'),
    ({"dtype": "fp"}, '[0].dtype: expected "int" or "float", got "fp"'),
    ({"dtype": "float", "bitwidth": 8}, '[0].bitwidth: a float tensor has 16 or 32 bits, got 8'),
    ({"is_symmetric": "yes"}, '[0].is_symmetric: expected "True" or "False", got "yes"'),
    ({"is_symmetric": 1}, '[0].is_symmetric: expected "True" or "False", got 1'),
    ({"min": 2.0}, '[0]: min 2.0 is greater than max 1.0; swap them'),
    ({"min": "low"}, '[0].min: expected a number, got the string "low"'),
    ({"max": None}, '[0].max: expected a number, got null'),
    ({"max": float("inf")}, '[0].max: expected a finite number, got inf'),
    ({"scale": 0.0, "offset": -128}, '[0].scale: must be positive, got 0.0'),
    ({"scale": -0.5, "offset": -128}, '[0].scale: must be positive, got -0.5'),
    ({"scale": 0.1, "offset": -12.5}, '[0].offset: expected an integer, got -12.5'),
    ({"scale": 0.1}, '[0]: "scale" and "offset" go together; add "offset" or remove the other'),
    ({"bitwdith": 8},
     '[0]: unknown key "bitwdith"; use bitwidth, dtype, is_symmetric, max, min, offset, scale'),
])
def test_entry_errors(fields: dict, expected: str) -> None:
    message = entry_error(**fields)
    assert message.startswith("overrides.json: activation_encodings[\"conv1_out\"][0]")
    assert expected in message, message


@pytest.mark.parametrize(("entry", "expected"), [
    ({"bitwidth": 8, "min": -1.0}, '[0]: "min" and "max" go together; add "max" or remove the other'),
    ({}, '[0]: missing "bitwidth"; add e.g. "bitwidth": 8'),
    ({"bitwidth": 8, "scale": 0.1, "offset": 20},
     '[0].offset: 20 puts float 0 outside the 8-bit grid; QNN offsets are in [-255, 0] (float '
     '= (q + offset) * scale); if 20 is the zero point, write -20'),
    ({"bitwidth": 8, "scale": 0.1, "offset": -300}, "[0].offset: -300 puts float 0 outside"),
    ({"bitwidth": 8, "scale": 0.1, "offset": -100, "is_symmetric": "True"},
     '[0].offset: a symmetric encoding has offset -128, got -100; fix the offset or set '
     '"is_symmetric": "False"'),
])
def test_more_entry_errors(entry: dict, expected: str) -> None:
    message = error_of(one(entry))
    assert 'overrides.json: activation_encodings["conv1_out"]' + expected in message, message


def test_nan_is_rejected_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    path.write_text('{"activation_encodings": {"x": [{"bitwidth": 8, "min": NaN, "max": 1}]},\n'
                    ' "param_encodings": {}}')
    with pytest.raises(QuantirError, match=r'activation_encodings\["x"\]\[0\]\.min: expected '
                                           r'a finite number, got nan'):
        load_overrides(path)


@pytest.mark.parametrize(("data", "expected"), [
    ([], 'overrides.json: expected a JSON object with "activation_encodings" and '
         '"param_encodings", got a list'),
    ({"activation_encodings": {}},
     'overrides.json: missing "param_encodings"; add "param_encodings": {} (QNN requires both '
     'sections, even when empty)'),
    ({"param_encodings": {}}, 'overrides.json: missing "activation_encodings"'),
    ({"activation_encodings": [], "param_encodings": {}},
     'overrides.json: activation_encodings: expected an object mapping tensor names to lists '
     'of encodings (AIMET 0.6.1 / QNN format), got a list; AIMET 1.0 list-style files are not '
     'supported'),
    ({"activation_encodings": {}, "param_encodings": 3},
     'overrides.json: param_encodings: expected an object mapping tensor names to lists of '
     'encodings, got the number 3'),
    ({"activation_encodings": {"x": {"bitwidth": 8}}, "param_encodings": {}},
     'overrides.json: activation_encodings["x"]: expected a list of encodings, got an object'),
    ({"activation_encodings": {"x": []}, "param_encodings": {}},
     'overrides.json: activation_encodings["x"]: empty list; give one encoding'),
    ({"activation_encodings": {"x": [8]}, "param_encodings": {}},
     'overrides.json: activation_encodings["x"][0]: expected an object with bitwidth, min, '
     'max, ..., got the number 8'),
    ({"activation_encodings": {"x": [{"bitwidth": 8}, {"bitwidth": 8}]}, "param_encodings": {}},
     'overrides.json: activation_encodings["x"]: 2 entries, but an activation encoding is per '
     'tensor; give one entry'),
    ({"activation_encodings": {}, "param_encodings": {}, "version": 6.1},
     'overrides.json: version: expected a string like "0.6.1", got the number 6.1'),
])
def test_structure_errors(data: object, expected: str) -> None:
    assert error_of(data) == expected or error_of(data).startswith(expected), error_of(data)


def channel(scale: float, **fields: object) -> dict:
    return {"bitwidth": 8, "is_symmetric": "True", "min": -128 * scale, "max": 127 * scale,
            **fields}


@pytest.mark.parametrize(("entries", "expected"), [
    ([channel(0.1), channel(0.2, is_symmetric="False")],
     'param_encodings["w"][1].is_symmetric: per-channel encodings must be symmetric (QNN); '
     'set "is_symmetric": "True"'),
    ([channel(0.1), channel(0.2, bitwidth=4)],
     'param_encodings["w"][1].bitwidth: per-channel entries must share one bit width: 4 here, '
     '8 in entry 0'),
    ([channel(0.1), {"bitwidth": 8, "is_symmetric": "True"}],
     'param_encodings["w"][1]: a per-channel entry needs min/max or scale/offset'),
    ([{"bitwidth": 32, "dtype": "float"}, {"bitwidth": 32, "dtype": "float"}],
     'param_encodings["w"][0].dtype: a float override has one entry, not one per channel'),
])
def test_per_channel_errors(entries: list, expected: str) -> None:
    message = error_of({"activation_encodings": {}, "param_encodings": {"w": entries}})
    assert message == f"overrides.json: {expected}" or expected in message, message


def test_malformed_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "activation_encodings": {\n    "x": [{"bitwidth": 8,}]\n  }\n}\n')
    with pytest.raises(QuantirError) as caught:
        load_overrides(path)
    assert str(caught.value).startswith(f"{path}:3:")
    assert "invalid JSON: Expecting property name enclosed in double quotes; fix the syntax" \
        in str(caught.value)


def test_duplicate_keys_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.json"
    path.write_text('{"activation_encodings": {"x": [{"bitwidth": 8}], "x": [{"bitwidth": 16}]},'
                    ' "param_encodings": {}}')
    with pytest.raises(QuantirError, match=r'dup.json: key "x" appears twice in one JSON '
                                           r'object; keep one'):
        load_overrides(path)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(QuantirError, match="missing.json: cannot read the encodings file"):
        load_overrides(tmp_path / "missing.json")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe{}")
    with pytest.raises(QuantirError, match="binary.json: the encodings file is not UTF-8"):
        load_overrides(binary)


def test_unknown_top_level_key_warns() -> None:
    with pytest.warns(QuantirWarning, match=r'o.json: unknown top-level key "extra" is ignored'):
        parse_overrides({"activation_encodings": {}, "param_encodings": {}, "extra": 1}, "o.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse_overrides({"activation_encodings": {}, "param_encodings": {}, "version": "0.6.1",
                         "excluded_layers": [], "quantizer_args": {}}, "o.json")


# -- writing ----------------------------------------------------------------------------------


def test_write_format(tmp_path: Path) -> None:
    path = tmp_path / "encodings.json"
    encoding = encoding_from_range(-1.8, 0.5, bits=8)
    write_encodings(path, {"x": encoding, "f": [float_entry(16)]},
                    {"w": [encoding_from_range(-1, 1, 8, symmetric=True),
                           encoding_from_range(-2, 2, 8, symmetric=True)]})
    document = json.loads(path.read_text())
    assert list(document) == ["version", "activation_encodings", "param_encodings"]
    assert document["version"] == "0.6.1"
    assert document["activation_encodings"]["x"] == [{
        "bitwidth": 8, "dtype": "int", "is_symmetric": "False", "max": encoding.max,
        "min": encoding.min, "offset": -200, "scale": encoding.scale}]
    assert document["activation_encodings"]["f"] == [{"bitwidth": 16, "dtype": "float"}]
    first, second = document["param_encodings"]["w"]
    assert (first["offset"], first["is_symmetric"]) == (-128, "True")
    assert first["min"] == -128 * first["scale"] and first["max"] == 127 * first["scale"]
    assert second["scale"] == 2 / 127
    assert list(first) == ["bitwidth", "dtype", "is_symmetric", "max", "min", "offset", "scale"]
    assert [p.name for p in tmp_path.iterdir()] == ["encodings.json"]  # no temporary left


def test_write_then_load_round_trips_the_seed_files(tmp_path: Path) -> None:
    for name in ("qnn_per_channel.json", "qnn_mixed_precision.json"):
        original = quiet_load(CONFIGS / name)
        path = tmp_path / name
        write_encodings(path, dict(original.activations), dict(original.params))  # type: ignore[attr-defined]
        again = quiet_load(path)
        assert again.activations == original.activations  # type: ignore[attr-defined]
        assert again.params == original.params  # type: ignore[attr-defined]


encodings = st.builds(
    lambda low, width, bits, symmetric, signed: encoding_from_range(
        low, low + width, bits=bits, symmetric=symmetric, signed=signed),
    st.floats(-1e4, 1e4), st.floats(0, 1e4), st.sampled_from([4, 8, 16, 32]), st.booleans(),
    st.booleans())


@settings(max_examples=300, deadline=None)
@given(encoding=encodings)
def test_round_trip_is_bit_exact(tmp_path_factory: pytest.TempPathFactory,
                                 encoding: Encoding) -> None:
    path = tmp_path_factory.mktemp("rt") / "e.json"
    write_encodings(path, {"x": encoding}, {"w": [encoding, encoding]}
                    if encoding.symmetric else {})
    loaded = quiet_load(path)
    assert loaded.activation("x").encoding(signed=encoding.signed) == encoding  # type: ignore[attr-defined]
    if encoding.symmetric:
        assert loaded.param("w").encodings(signed=encoding.signed) == (encoding, encoding)  # type: ignore[attr-defined]


def test_write_validates_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "encodings.json"
    path.write_text("old")
    with pytest.raises(QuantirError, match=r'encodings.json: activation_encodings\["x"\]\[0\]'
                                           r'\.bitwidth: expected one of 4, 8, 16, 32, got 2'):
        write_encodings(path, {"x": encoding_from_range(-1, 1, bits=2)}, {})
    with pytest.raises(QuantirError, match=r'param_encodings\["w"\]\[0\]\.is_symmetric'):
        write_encodings(path, {}, {"w": [encoding_from_range(-1, 1), encoding_from_range(-1, 2)]})
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encodings.json"]


def test_write_into_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(QuantirError, match="cannot write the encodings file"):
        write_encodings(tmp_path / "nowhere" / "e.json", {}, {})


def test_write_replaces_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "encodings.json"
    path.write_text("old")

    def fail(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(QuantirError, match="No space left on device"):
        write_encodings(path, {"x": encoding_from_range(-1, 1)}, {})
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encodings.json"]


def test_entries_for_types() -> None:
    per_tensor = UniformQuantizedType.get("u8", 2.3 / 255, 200)
    assert entries_for_type(per_tensor) == [encoding_entry(
        Encoding(2.3 / 255, 200, 8, False, False))]
    assert entries_for_type(per_tensor, symmetric=True)[0]["is_symmetric"] == "True"
    per_axis = PerAxisQuantizedType.get("i8", (0.1, 0.2), (0, 0), 0)
    entries = entries_for_type(per_axis)
    assert [e["is_symmetric"] for e in entries] == ["True", "True"]
    assert [e["offset"] for e in entries] == [-128, -128]
    skewed = PerAxisQuantizedType.get("i8", (0.1, 0.2), (0, 5), 0)
    assert [e["is_symmetric"] for e in entries_for_type(skewed)] == ["True", "False"]
    assert entries_for_type(f32) == [{"bitwidth": 32, "dtype": "float"}]
    assert entries_for_type(f16) == [{"bitwidth": 16, "dtype": "float"}]
    with pytest.raises(ValueError, match="no encodings entry"):
        entries_for_type(i8)


def test_write_accepts_types_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    qtype = PerAxisQuantizedType.get("i8", (0.1, 0.2), (0, 0), 0)
    override = TensorEncodingOverride("x", "here", 16)
    write_encodings(path, {"x": override}, {"w": qtype})
    loaded = quiet_load(path)
    assert loaded.param("w").to_type(axis=0) == qtype  # type: ignore[attr-defined]
    assert loaded.activation("x").bits == 16  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="cannot write"):
        write_encodings(path, {"x": 3}, {})  # type: ignore[dict-item]
