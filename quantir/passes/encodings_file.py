"""AIMET / QNN encodings JSON: read quantization overrides, write the encodings quantir chose.

The format (`seeds/qnn-quantization.txt`, "Quantization Overrides"; AIMET 0.6.1):

    {"version": "0.6.1",
     "activation_encodings": {"<tensor>": [ENTRY]},
     "param_encodings":      {"<weight or bias>": [ENTRY, ...]}}

    ENTRY = {"bitwidth": 8, "dtype": "int", "is_symmetric": "False",
             "min": -1.8039, "max": 0.4961, "scale": 0.0090196, "offset": -200}

Both sections must be present ("Both must be present in the file, but can be empty").
An entry needs `bitwidth`; `dtype` is "int" (default) or "float" ("float" keeps the
tensor in float, 16 or 32 bits; its other fields are ignored); `is_symmetric` is
"True"/"False" (AIMET writes strings; JSON booleans are accepted). The range is given
by `min` and `max` or by `scale` and `offset`, or not at all (an entry with only a bit
width sets the width and leaves the range to calibration). A list with several entries
is a per-channel encoding of a parameter, one entry per output channel; QNN requires
those to be symmetric ("Per-channel always has is_symmetric = True"). An activation has
one entry.

Offset convention. In the JSON, `float = (q + offset) * scale` with q on the unsigned
grid [0, 2^bits - 1], so `offset = round(min / scale)` is zero or negative: the seed's
overrides examples write `"offset": -103` for min -2.059 and `"offset": -128.0` for the
symmetric per-channel case ("Per-channel quantization must use symmetric representation
with offset == -2^(bitwidth-1)"). The seed's worked example ("offset is 200" for
[-1.8, -1.0, 0, 0.5]) uses the other sign: there offset is "The integer value which
exactly represents 0. round(-min/scale)", i.e. the unsigned zero point. quantir writes
and reads the JSON sign (-200 for that example) and converts to q_math's
`r = scale * (q - zero_point)`: `zero_point = storage_min - offset` (200 on u8, 72 on i8).

Deriving what is missing, as QNN does ("Scale and offset will be calculated from the
provided bw, min, and max parameters regardless if they are provided or not"):

* asymmetric, from min/max: `q_math.encoding_from_range` (range widened to include 0 and
  to at least 0.0001, `scale = (max - min) / (2^bits - 1)`, `offset = -round(-min/scale)`);
* symmetric, from min/max: `offset = -2^(bits-1)` and the smallest scale whose grid
  `[-2^(bits-1), 2^(bits-1) - 1] * scale` covers [min, max] (AIMET writes exactly such
  pairs: min = -128 * scale, max = 127 * scale);
* from scale/offset: `min = offset * scale`, `max = (offset + 2^bits - 1) * scale`.

When an entry gives min/max and scale/offset, min/max win. The file's scale is kept
when it agrees with the derived one (same offset, scale within 1e-6 relative: the two
differ only by float rounding), so a file quantir wrote loads back bit-identical; entries
that disagree more (the seed's own first example has positive, truncated offsets) use the
derived values and the file gets one QuantirWarning.

Symmetric encodings. q_math's symmetric grid is the narrow [-(2^(bits-1) - 1),
2^(bits-1) - 1]; AIMET's min is one step lower (-2^(bits-1) * scale). Scale and zero
point are the same; `min`/`mins` here report the AIMET value, as the file does.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from xdsl.dialects.builtin import Float16Type, Float32Type, Float64Type
from xdsl.ir import Attribute

from quantir.dialects.q import (
    PerAxisQuantizedType,
    QuantizedType,
    UniformQuantizedType,
    storage_range,
)
from quantir.dialects.q_math import MIN_RANGE, Encoding, encoding_from_range
from quantir.errors import QuantirError
from quantir.ir import write_atomically
from quantir.passes.qconfig import QuantirWarning

AIMET_VERSION = "0.6.1"
"""The version string quantir writes."""

INT_BITWIDTHS: tuple[int, ...] = (4, 8, 16, 32)
FLOAT_BITWIDTHS: tuple[int, ...] = (16, 32)
ENTRY_KEYS: tuple[str, ...] = ("bitwidth", "dtype", "is_symmetric", "max", "min", "offset",
                               "scale")
_IGNORED_TOP_LEVEL_KEYS = frozenset({"version", "excluded_layers", "quantizer_args"})
_SCALE_AGREEMENT = 1e-6
"""Relative difference below which a file's scale is kept (float rounding, float32 export)."""


@dataclass(frozen=True)
class TensorEncodingOverride:
    """One tensor's entry (or per-channel entries) from an encodings file.

    `scales` / `offsets` are empty for float entries and for entries that give only a
    bit width; otherwise they hold one value per channel (one for a per-tensor entry).
    Offsets use the JSON convention `float = (q + offset) * scale` (see the module doc).
    `where` names the entry in the file, for diagnostics.
    """

    name: str
    where: str
    bits: int
    is_float: bool = False
    symmetric: bool = False
    scales: tuple[float, ...] = ()
    offsets: tuple[int, ...] = ()

    @property
    def has_range(self) -> bool:
        return bool(self.scales)

    @property
    def per_channel(self) -> bool:
        return len(self.scales) > 1

    @property
    def num_channels(self) -> int:
        return len(self.scales)

    @property
    def mins(self) -> tuple[float, ...]:
        return tuple(offset * scale for scale, offset in zip(self.scales, self.offsets,
                                                             strict=True))

    @property
    def maxs(self) -> tuple[float, ...]:
        top = (1 << self.bits) - 1
        return tuple((offset + top) * scale for scale, offset in zip(self.scales, self.offsets,
                                                                     strict=True))

    def zero_points(self, signed: bool = True) -> tuple[int, ...]:
        """q_math zero points (`r = scale * (q - zero_point)`) on signed or unsigned storage."""
        low = storage_range(self.bits, signed)[0]
        return tuple(low - offset for offset in self.offsets)

    def encodings(self, signed: bool = True) -> tuple[Encoding, ...]:
        """One q_math Encoding per channel (empty for float or width-only entries)."""
        return tuple(Encoding(scale, zero_point, self.bits, signed, self.symmetric)
                     for scale, zero_point in zip(self.scales, self.zero_points(signed),
                                                  strict=True))

    def encoding(self, signed: bool = True) -> Encoding | None:
        """The per-tensor Encoding; None for float or width-only entries.

        A per-channel entry has no single Encoding: use `encodings()` or `to_type()`.
        """
        if self.per_channel:
            raise ValueError(f"{self.where} has {self.num_channels} per-channel encodings; "
                             f"use encodings() or to_type(axis)")
        encodings = self.encodings(signed)
        return encodings[0] if encodings else None

    def to_type(self, axis: int = 0, signed: bool = True, expressed: str = "f32") \
            -> QuantizedType:
        """`!q.uniform` for one entry, `!q.per_axis` (along `axis`) for several."""
        if not self.has_range:
            raise ValueError(f"{self.where} gives no range (float or bit width only)")
        storage = f"{'i' if signed else 'u'}{self.bits}"
        if not self.per_channel:
            return UniformQuantizedType.get(storage, self.scales[0],
                                            self.zero_points(signed)[0], expressed)
        return PerAxisQuantizedType.get(storage, self.scales, self.zero_points(signed), axis,
                                        expressed)

    def entries(self) -> list[dict[str, object]]:
        """The JSON entries of this override (what `write_encodings` writes)."""
        if self.is_float:
            return [float_entry(self.bits)]
        if not self.has_range:
            return [{"bitwidth": self.bits, "dtype": "int",
                     "is_symmetric": str(self.symmetric)}]
        return [_entry(self.bits, self.symmetric, scale, offset)
                for scale, offset in zip(self.scales, self.offsets, strict=True)]


@dataclass(frozen=True)
class EncodingOverrides:
    """A loaded encodings file: per-tensor overrides of activations and parameters."""

    path: str
    activations: Mapping[str, TensorEncodingOverride]
    params: Mapping[str, TensorEncodingOverride]
    version: str | None = None

    def activation(self, tensor_name: str) -> TensorEncodingOverride | None:
        return self.activations.get(tensor_name)

    def param(self, name: str) -> TensorEncodingOverride | None:
        return self.params.get(name)

    def names(self) -> list[str]:
        """Every tensor the file names: activations, then parameters, in file order."""
        return list(dict.fromkeys([*self.activations, *self.params]))


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def load_overrides(path: str | Path) -> EncodingOverrides:
    """Read and validate a QNN / AIMET quantization-overrides (encodings) JSON file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise QuantirError(f"{source}: cannot read the encodings file "
                           f"({error.strerror or error}); check the path") from None
    except UnicodeDecodeError as error:
        raise QuantirError(f"{source}: the encodings file is not UTF-8 text ({error.reason}); "
                           f"save it as JSON text") from None
    duplicates: list[str] = []

    def unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
        # json.loads keeps the last of two equal keys silently; an override file with a
        # tensor named twice is ambiguous, so it is an error.
        seen: dict[str, object] = {}
        for key, value in pairs:
            if key in seen:
                duplicates.append(key)
            seen[key] = value
        return seen

    try:
        # NaN / Infinity (accepted by Python, not by JSON) become floats that the range
        # checks reject with their JSON path.
        data = json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as error:
        raise QuantirError(f"{source}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}; "
                           f"fix the syntax there") from None
    if duplicates:
        raise QuantirError(f"{source}: key {json.dumps(duplicates[0])} appears twice in one JSON "
                           f"object; keep one")
    return parse_overrides(data, source)


def parse_overrides(data: object, source: str = "<overrides>") -> EncodingOverrides:
    """Validate already-decoded JSON (`load_overrides` without the file)."""
    reader = _Reader(source)
    if not isinstance(data, dict):
        raise reader.error("", f"expected a JSON object with \"activation_encodings\" and "
                               f"\"param_encodings\", got {_type_name(data)}")
    for key in data:
        if key not in ("activation_encodings", "param_encodings", *_IGNORED_TOP_LEVEL_KEYS):
            warnings.warn(f"{source}: unknown top-level key {json.dumps(key)} is ignored "
                          f"(expected activation_encodings, param_encodings, version)",
                          QuantirWarning, stacklevel=3)
    version = data.get("version")
    if version is not None and not isinstance(version, str):
        raise reader.error("version", f"expected a string like \"{AIMET_VERSION}\", got "
                                      f"{_type_name(version)}")
    sections = {}
    for section in ("activation_encodings", "param_encodings"):
        if section not in data:
            raise reader.error("", f"missing \"{section}\"; add \"{section}\": {{}} (QNN "
                                   f"requires both sections, even when empty)")
        sections[section] = reader.section(section, data[section])
    if reader.disagreeing:
        count = len(reader.disagreeing)
        warnings.warn(f"{source}: {count} entr{'y gives' if count == 1 else 'ies give'} "
                      f"scale/offset that disagree with min/max (first: "
                      f"{reader.disagreeing[0]}); quantir uses min/max, as QNN does",
                      QuantirWarning, stacklevel=3)
    return EncodingOverrides(source, sections["activation_encodings"],
                             sections["param_encodings"], version)


class _Reader:
    """Validation of one file; every error names its JSON path."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.disagreeing: list[str] = []  # entries whose scale/offset lost to min/max

    def error(self, path: str, message: str) -> QuantirError:
        return QuantirError(f"{self.source}: {path + ': ' if path else ''}{message}")

    def section(self, section: str, value: object) -> dict[str, TensorEncodingOverride]:
        if isinstance(value, list):
            raise self.error(section, "expected an object mapping tensor names to lists of "
                                      "encodings (AIMET 0.6.1 / QNN format), got a list; "
                                      "AIMET 1.0 list-style files are not supported")
        if not isinstance(value, dict):
            raise self.error(section, f"expected an object mapping tensor names to lists of "
                                      f"encodings, got {_type_name(value)}")
        return {name: self.tensor(section, name, entries) for name, entries in value.items()}

    def tensor(self, section: str, name: str, entries: object) -> TensorEncodingOverride:
        where = f"{section}[{json.dumps(name)}]"
        if not isinstance(entries, list):
            raise self.error(where, f"expected a list of encodings, got {_type_name(entries)}")
        if not entries:
            raise self.error(where, "empty list; give one encoding (or one per output channel "
                                    "for a weight)")
        if section == "activation_encodings" and len(entries) > 1:
            raise self.error(where, f"{len(entries)} entries, but an activation encoding is per "
                                    f"tensor; give one entry")
        parsed = [self.entry(f"{where}[{index}]", entry) for index, entry in enumerate(entries)]
        first = parsed[0]
        if len(parsed) == 1:
            bits, is_float, symmetric, scale, offset = first
            if scale is None or offset is None:
                return TensorEncodingOverride(name, where, bits, is_float, symmetric)
            return TensorEncodingOverride(name, where, bits, False, symmetric, (scale,), (offset,))
        for index, (bits, is_float, symmetric, scale, _) in enumerate(parsed):
            at = f"{where}[{index}]"
            if is_float:
                raise self.error(f"{at}.dtype", "a float override has one entry, not one per "
                                                "channel; give a single entry")
            if bits != first[0]:
                raise self.error(f"{at}.bitwidth", f"per-channel entries must share one bit "
                                                   f"width: {bits} here, {first[0]} in entry 0")
            if not symmetric:
                raise self.error(f"{at}.is_symmetric", "per-channel encodings must be symmetric "
                                                       "(QNN); set \"is_symmetric\": \"True\"")
            if scale is None:
                raise self.error(at, "a per-channel entry needs min/max or scale/offset")
        return TensorEncodingOverride(name, where, first[0], False, True,
                                      tuple(p[3] for p in parsed),  # type: ignore[misc]
                                      tuple(p[4] for p in parsed))  # type: ignore[misc]

    def entry(self, where: str, entry: object) \
            -> tuple[int, bool, bool, float | None, int | None]:
        """(bits, is_float, symmetric, scale, offset) of one entry."""
        if not isinstance(entry, dict):
            raise self.error(where, f"expected an object with bitwidth, min, max, ..., got "
                                    f"{_type_name(entry)}")
        for key in entry:
            if key not in ENTRY_KEYS:
                raise self.error(where, f"unknown key {json.dumps(key)}; use "
                                        f"{', '.join(ENTRY_KEYS)}")
        if "bitwidth" not in entry:
            raise self.error(where, "missing \"bitwidth\"; add e.g. \"bitwidth\": 8")
        bits = self.integer(f"{where}.bitwidth", entry["bitwidth"])
        dtype = entry.get("dtype", "int")
        if dtype not in ("int", "float"):
            raise self.error(f"{where}.dtype", f"expected \"int\" or \"float\", got "
                                               f"{json.dumps(dtype)}")
        if dtype == "float":
            if bits not in FLOAT_BITWIDTHS:
                raise self.error(f"{where}.bitwidth", f"a float tensor has 16 or 32 bits, got "
                                                      f"{bits}")
            return bits, True, False, None, None
        if bits not in INT_BITWIDTHS:
            raise self.error(f"{where}.bitwidth", f"expected one of "
                                                  f"{', '.join(map(str, INT_BITWIDTHS))}, got "
                                                  f"{bits}")
        symmetric = self.boolean(f"{where}.is_symmetric", entry.get("is_symmetric", "False"))
        low = self.pair(where, entry, "min", "max")
        given = self.pair(where, entry, "scale", "offset")
        if given is not None:
            scale = given[0]
            if not scale > 0:
                raise self.error(f"{where}.scale", f"must be positive, got {scale!r}")
            offset = self.integer(f"{where}.offset", entry["offset"])
            given = (scale, offset)
        if low is not None:
            minimum, maximum = low
            if minimum > maximum:
                raise self.error(where, f"min {minimum!r} is greater than max {maximum!r}; swap "
                                        f"them")
            scale, offset = _from_range(minimum, maximum, bits, symmetric)
            if given is not None:
                if given[1] == offset and \
                        abs(given[0] - scale) <= _SCALE_AGREEMENT * scale:
                    scale = given[0]  # the file's exact value; the derived one only rounds
                else:
                    self.disagreeing.append(where)
            return bits, False, symmetric, scale, offset
        if given is not None:
            scale, offset = given
            top = (1 << bits) - 1
            if not -top <= offset <= 0:
                raise self.error(f"{where}.offset", f"{offset} puts float 0 outside the "
                                                    f"{bits}-bit grid; QNN offsets are in "
                                                    f"[-{top}, 0] (float = (q + offset) * scale)"
                                                    f"{_zero_point_hint(offset, top)}")
            if symmetric and offset != -(1 << (bits - 1)):
                raise self.error(f"{where}.offset", f"a symmetric encoding has offset "
                                                    f"{-(1 << (bits - 1))}, got {offset}; fix "
                                                    f"the offset or set \"is_symmetric\": "
                                                    f"\"False\"")
            return bits, False, symmetric, scale, offset
        return bits, False, symmetric, None, None

    def pair(self, where: str, entry: dict, first: str, second: str) \
            -> tuple[float, float] | None:
        """Both numbers of a min/max or scale/offset pair, or None when both are absent."""
        if (first in entry) != (second in entry):
            missing = second if first in entry else first
            raise self.error(where, f"\"{first}\" and \"{second}\" go together; add "
                                    f"\"{missing}\" or remove the other")
        if first not in entry:
            return None
        return self.number(f"{where}.{first}", entry[first]), \
            self.number(f"{where}.{second}", entry[second])

    def number(self, where: str, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(where, f"expected a number, got {_type_name(value)}")
        if not math.isfinite(value):
            raise self.error(where, f"expected a finite number, got {value}")
        return float(value)

    def integer(self, where: str, value: object) -> int:
        number = self.number(where, value)
        if not number.is_integer():
            raise self.error(where, f"expected an integer, got {value!r}")
        return int(number)

    def boolean(self, where: str, value: object) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise self.error(where, f"expected \"True\" or \"False\", got {json.dumps(value)}")


def _from_range(minimum: float, maximum: float, bits: int, symmetric: bool) -> tuple[float, int]:
    """(scale, offset) of [minimum, maximum], by the rules in the module docstring."""
    if not symmetric:
        encoding = encoding_from_range(minimum, maximum, bits, symmetric=False, signed=False)
        return encoding.scale, -encoding.zero_point
    half = 1 << (bits - 1)
    scale = max(-minimum / half, maximum / (half - 1), MIN_RANGE / 2 / (half - 1))
    return scale, -half


def _zero_point_hint(offset: int, top: int) -> str:
    if 0 < offset <= top:
        return f"; if {offset} is the zero point, write {-offset}"
    return ""


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {json.dumps(value)}"
    if isinstance(value, str):
        return f"the string {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def _entry(bits: int, symmetric: bool, scale: float, offset: int) -> dict[str, object]:
    # Keys in AIMET's (alphabetical) order; min/max are the grid ends, as AIMET writes them.
    top = (1 << bits) - 1
    return {"bitwidth": bits, "dtype": "int", "is_symmetric": str(symmetric),
            "max": (offset + top) * scale, "min": offset * scale, "offset": offset,
            "scale": scale}


def encoding_entry(encoding: Encoding) -> dict[str, object]:
    """The AIMET entry of a q_math Encoding: offset = storage_min - zero_point (<= 0).

    For [-1.8, 0.5] on 8 bits (the seed's worked example): scale 2.3/255, zero point 200
    (u8) or 72 (i8), offset -200, min -1.803922, max 0.496078.
    """
    offset = storage_range(encoding.bits, encoding.signed)[0] - encoding.zero_point
    return _entry(encoding.bits, encoding.symmetric, encoding.scale, offset)


def float_entry(bits: int = 32) -> dict[str, object]:
    """The entry that keeps a tensor in float (QNN: dtype "float", 16 or 32 bits)."""
    return {"bitwidth": bits, "dtype": "float"}


def entries_for_type(element_type: Attribute, symmetric: bool | None = None) \
        -> list[dict[str, object]]:
    """AIMET entries for a tensor's element type: a float type, `!q.uniform` or `!q.per_axis`.

    A quantized type does not record whether its encoding was chosen symmetric. Per-axis
    types are written symmetric when their zero points are centred (QNN requires it of
    per-channel entries); per-tensor types are written asymmetric unless `symmetric`
    says otherwise, so that reading the file back never narrows the integer grid.
    """
    if isinstance(element_type, Float32Type | Float16Type | Float64Type):
        return [float_entry(element_type.bitwidth)]
    if not isinstance(element_type, QuantizedType):
        raise ValueError(f"no encodings entry for the element type {element_type}")
    bits, signed = element_type.storage_bits, element_type.is_signed
    centred = 0 if signed else 1 << (bits - 1)
    entries = []
    for scale, zero_point in zip(element_type.scales, element_type.zero_points, strict=True):
        if symmetric is not None:
            is_symmetric = symmetric
        else:
            is_symmetric = isinstance(element_type, PerAxisQuantizedType) \
                and zero_point == centred
        entries.append(encoding_entry(Encoding(scale, zero_point, bits, signed, is_symmetric)))
    return entries


EncodingsValue = Encoding | TensorEncodingOverride | QuantizedType | Sequence[object]
"""What `write_encodings` takes per tensor: an Encoding, a loaded override, a quantized
element type, or a list of Encodings and/or entry dicts (several = per channel)."""


def _entries_of(value: EncodingsValue) -> list[dict[str, object]]:
    if isinstance(value, Encoding):
        return [encoding_entry(value)]
    if isinstance(value, TensorEncodingOverride):
        return value.entries()
    if isinstance(value, QuantizedType):
        return entries_for_type(value)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [encoding_entry(item) if isinstance(item, Encoding) else dict(item)  # type: ignore[call-overload]
                for item in value]
    raise ValueError(f"cannot write {value!r} as encodings: expected an Encoding, a "
                     f"TensorEncodingOverride, a quantized type or a list of entries")


def write_encodings(path: str | Path, activation: Mapping[str, EncodingsValue],
                    param: Mapping[str, EncodingsValue]) -> None:
    """Write an AIMET 0.6.1 encodings file atomically (a temporary file, then os.replace).

    The document is validated with the reader before anything is written, so quantir
    never writes a file it would refuse to load; a failure leaves `path` untouched.
    """
    document = {
        "version": AIMET_VERSION,
        "activation_encodings": {name: _entries_of(v) for name, v in activation.items()},
        "param_encodings": {name: _entries_of(v) for name, v in param.items()},
    }
    parse_overrides(json.loads(json.dumps(document)), str(path))
    text = json.dumps(document, indent=4) + "\n"
    try:
        write_atomically(Path(path), text)
    except OSError as error:
        raise QuantirError(f"{path}: cannot write the encodings file "
                           f"({error.strerror or error}); check that the directory exists "
                           f"and is writable") from None
