"""Calibration data: samples from files or Python, validated against the model's inputs,
served in batches.

`sample_shapes` are the model's input shapes without the batch axis; every served batch
of input `name` has shape (b, *sample_shape) and the model's dtype.

Sources
-------
- `.npy` file: one array whose first axis counts samples; single-input models only.
  Memory-mapped and copied out one batch at a time.
- `.npz` file: one array per input name (`np.savez(path, **{name: array})`), first axis
  = samples, the same count for every input. Members are streamed out of the zip a
  batch at a time (stored or compressed alike; `np.load(mmap_mode="r")` cannot map a
  zip member), so the file is never loaded whole; Fortran-ordered members, which
  cannot be streamed by rows, are the one exception.
- directory: for a single-input model, every `*.npy` / `*.raw` file directly inside,
  sorted by file name as plain strings (zero-pad numbers: `10.npy` sorts before
  `2.npy`), one sample per file, each sample-shaped or with a leading axis of 1. For
  several inputs (or one), one subdirectory per input named exactly like the input,
  each holding such files: sample i is the i-th file (by name) of every
  subdirectory, and every subdirectory must hold the same number. Other files are
  ignored; other subdirectories (except hidden ones) are an error.
- `.txt` input list (QNN `--input_list`): one sample per line, either one path
  (single-input models) or space-separated `name:=path` pairs; lines starting with
  `#` or `%` (QNN output names) and blank lines are skipped; relative paths are
  relative to the list file; paths cannot contain spaces. `.npy` files are read with
  numpy; any other file is raw bytes (QNN `.raw` / `.rawtensor`): float32 for float
  inputs, the model's own dtype for integer / bool inputs, reshaped to the sample.
- a numpy array: like a `.npy` file, in memory.
- any other iterable of `{input_name: array}` dicts (a single dict counts as one item):
  each item is one sample (arrays of the sample shape) or a batch (one more leading
  axis). Read lazily: an item is pulled only when a batch needs it and never past
  `calibset_size`. A one-shot iterator (e.g. a generator) can be read once; give a
  list or another re-iterable to read the data several times.

Directories, list files, iterables and `.npy` / `.npz` files are all read lazily: at
most one batch (for iterables, one batch plus the item being split) is in memory.

Validation
----------
Every error is a one-line `FeedError` naming the place (file, `list.txt line 7`,
`calibration data item 3`) and the fix. Problems visible without reading samples are
raised when the `CalibrationData` is built: a missing source, unknown or missing input
names, too few samples for `calibset_size` (when the count is known: files, lists,
tuples), an `.npy` / `.npz` whose whole-array shape or dtype is wrong, a missing file in
a list. Everything else is checked as the samples stream and raised when the bad sample
is reached (a shape or dtype in a per-sample file or an iterable item, NaN / Inf in a
sample, an iterable that ends before `calibset_size`), so a long calibration can fail
late: run `samples()` once beforehand to check a whole data set.
Dtypes: float data for a float input is cast to the model's dtype silently, integer
data for an integer input likewise (values outside the target type are an error), bool
only for bool; any other mix is an error. Only the first `calibset_size` samples are
served (and checked) when it is given.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from quantir.errors import FeedError

SAMPLES_CHUNK = 64  # samples read at a time by `samples()`
_RAW_FLOAT = np.dtype(np.float32)


@dataclass(frozen=True)
class _Spec:
    """The model inputs the data must match."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]

    def listing(self) -> str:
        return ", ".join(f"'{n}'" for n in self.names)

    def check_names(self, given: Iterable[str], place: str) -> None:
        given = list(given)
        unknown = [n for n in given if n not in self.names]
        if unknown:
            raise FeedError(f"{place}: unknown input {', '.join(map(repr, unknown))}; "
                            f"the model's inputs are {self.listing()}")
        missing = [n for n in self.names if n not in given]
        if missing:
            raise FeedError(f"{place}: missing input {', '.join(map(repr, missing))}; "
                            f"the model's inputs are {self.listing()}")


@dataclass(frozen=True)
class _Chunk:
    """Raw arrays for some consecutive samples, and where they came from."""

    arrays: Mapping[str, Any]
    where: str  # the place for errors about the chunk as a whole
    form: str  # "samples": leading axis = samples; "one": one sample per array; "either"
    files: Mapping[str, str] | None = None  # per-input places (one file per input)

    def place(self, name: str) -> str:
        return self.files[name] if self.files and name in self.files else self.where


class _Source:
    """A kind of calibration source: a sample count if known, and raw chunks."""

    description: str  # names the source in errors about it as a whole
    count: int | None = None
    one_shot: bool = False

    def chunks(self, size: int) -> Iterator[_Chunk]:
        raise NotImplementedError


def _shape_text(shape: Sequence[int]) -> str:
    return str(tuple(int(d) for d in shape))


class _ArraySource(_Source):
    """One array, first axis = samples: a memory-mapped `.npy` or an in-memory array."""

    def __init__(self, array: np.ndarray, description: str, spec: _Spec) -> None:
        if len(spec.names) != 1:
            raise FeedError(f"{description}: one array cannot feed a model with {len(spec.names)} "
                            f"inputs ({spec.listing()}); use a .npz with one array per input, a "
                            "directory with one subdirectory per input, or an input list")
        if array.ndim == 0:
            raise FeedError(f"{description}: holds a scalar; the first axis must count samples")
        self.array, self.description, self.name = array, description, spec.names[0]
        self.count = int(array.shape[0])

    def header_chunk(self) -> _Chunk:
        """Zero samples with the array's shape and dtype, to check them up front."""
        return _Chunk({self.name: self.array[:0]}, self.description, "samples")

    def chunks(self, size: int) -> Iterator[_Chunk]:
        for start in range(0, self.count, size):
            # A copy: a plain array of one batch, never a view into the mapped file.
            yield _Chunk({self.name: np.array(self.array[start:start + size])},
                         self.description, "samples")


def _read_npy(path: Path, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise FeedError(f"{path}: not a readable .npy array ({error}); save it with "
                        "numpy.save") from error


@dataclass(frozen=True)
class _Member:
    """One `.npy` member of an `.npz`: its zip entry and header."""

    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool


def _read_header(stream: IO[bytes], place: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(stream)
        else:
            raise ValueError(f"npy format version {version} is not supported")
    except ValueError as error:
        raise FeedError(f"{place}: not a readable .npy array ({error}); save it with "
                        "numpy.savez") from error
    if dtype.hasobject:
        raise FeedError(f"{place}: holds Python objects; save numeric arrays")
    return tuple(shape), np.dtype(dtype), bool(fortran)


class _NpzSource(_Source):
    """An `.npz`, streamed member by member a batch at a time."""

    def __init__(self, path: Path, spec: _Spec) -> None:
        self.path, self.description = path, str(path)
        self.members: dict[str, _Member] = {}
        try:
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    name = info.filename.removesuffix(".npy")
                    with archive.open(info) as stream:
                        shape, dtype, fortran = _read_header(stream, f"{path} ({name})")
                    self.members[name] = _Member(info, shape, dtype, fortran)
        except (zipfile.BadZipFile, OSError) as error:
            raise FeedError(f"{path}: not a readable .npz archive ({error}); save it with "
                            "numpy.savez") from error
        spec.check_names(self.members, str(path))
        for name, member in self.members.items():
            if not member.shape:
                raise FeedError(f"{path}: input '{name}' is a scalar; the first axis must count samples")
        counts = {name: m.shape[0] for name, m in self.members.items()}
        if len(set(counts.values())) > 1:
            listed = ", ".join(f"'{n}': {c}" for n, c in counts.items())
            raise FeedError(f"{path}: the inputs have different sample counts ({listed}); give "
                            "every input the same number of samples")
        self.count = next(iter(counts.values()))

    def header_chunk(self) -> _Chunk:
        """Zero samples with every member's shape and dtype, to check them up front."""
        return _Chunk({n: np.empty((0, *m.shape[1:]), m.dtype) for n, m in self.members.items()},
                      self.description, "samples")

    def chunks(self, size: int) -> Iterator[_Chunk]:
        with zipfile.ZipFile(self.path) as archive:
            readers = {name: self._rows(archive, member, size) for name, member in self.members.items()}
            for _ in range(0, self.count, size):
                arrays = {name: next(reader) for name, reader in readers.items()}
                yield _Chunk(arrays, self.description, "samples")

    def _rows(self, archive: zipfile.ZipFile, member: _Member, size: int) -> Iterator[np.ndarray]:
        """Consecutive blocks of `size` rows of one member (the last may be shorter)."""
        name, count = member.info.filename.removesuffix(".npy"), member.shape[0]
        if member.fortran:  # rows are not contiguous: the one case loaded whole
            with archive.open(member.info) as stream:
                whole = np.lib.format.read_array(stream, allow_pickle=False)
            for start in range(0, count, size):
                yield whole[start:start + size]
            return
        with archive.open(member.info) as stream:
            _read_header(stream, str(self.path))
            for start in range(0, count, size):
                rows = min(size, count - start)
                block = np.empty((rows, *member.shape[1:]), member.dtype)
                view = memoryview(block).cast("B") if block.nbytes else memoryview(b"")
                filled = 0
                while filled < block.nbytes:
                    got = stream.readinto(view[filled:])
                    if not got:
                        raise FeedError(f"{self.path}: input '{name}' is truncated; write the "
                                        "archive again with numpy.savez")
                    filled += got
                yield block


def _load_sample_file(path: Path, name: str, spec: _Spec, place: str) -> np.ndarray:
    """One sample from a `.npy` file, or from raw bytes for any other file."""
    if path.suffix == ".npy":
        return _read_npy(path)
    index = spec.names.index(name)
    shape, dtype = spec.shapes[index], spec.dtypes[index]
    raw = _RAW_FLOAT if dtype.kind == "f" else dtype
    data = path.read_bytes()
    expected = math.prod(shape) * raw.itemsize
    if len(data) != expected:
        raise FeedError(f"{place}: {len(data)} bytes, but input '{name}' needs {expected} "
                        f"({raw} raw data of shape {_shape_text(shape)}); check the file or the "
                        "model's input shape")
    return np.frombuffer(data, raw).reshape(shape).copy()


class _DirectorySource(_Source):
    """A directory of per-sample files, or one subdirectory of them per input."""

    suffixes = (".npy", ".raw")

    def __init__(self, path: Path, spec: _Spec) -> None:
        self.description = str(path)
        subdirectories = sorted(p.name for p in path.iterdir()
                                if p.is_dir() and not p.name.startswith("."))
        if any(name in subdirectories for name in spec.names):
            unknown = [d for d in subdirectories if d not in spec.names]
            if unknown:
                raise FeedError(f"{path}: subdirectory {', '.join(map(repr, unknown))} is not an "
                                f"input; the model's inputs are {spec.listing()}")
            spec.check_names(subdirectories, str(path))
            self.files = {name: self._listing(path / name) for name in spec.names}
        elif len(spec.names) == 1:
            self.files = {spec.names[0]: self._listing(path)}
        else:
            raise FeedError(f"{path}: the model has {len(spec.names)} inputs ({spec.listing()}); "
                            "put each input's files in a subdirectory named like the input")
        counts = {name: len(files) for name, files in self.files.items()}
        if len(set(counts.values())) > 1:
            listed = ", ".join(f"'{n}': {c}" for n, c in counts.items())
            raise FeedError(f"{path}: the input subdirectories hold different numbers of files "
                            f"({listed}); give every input one file per sample")
        self.count = next(iter(counts.values()))
        self.spec = spec

    def _listing(self, directory: Path) -> list[Path]:
        files = sorted((p for p in directory.iterdir() if p.is_file() and p.suffix in self.suffixes),
                       key=lambda p: p.name)
        if not files:
            raise FeedError(f"{directory}: no .npy or .raw files; put one sample per file there")
        return files

    def chunks(self, size: int) -> Iterator[_Chunk]:
        for i in range(self.count):
            places = {name: str(files[i]) for name, files in self.files.items()}
            arrays = {name: _load_sample_file(files[i], name, self.spec, places[name])
                      for name, files in self.files.items()}
            yield _Chunk(arrays, places[self.spec.names[0]], "one", places)


class _ListSource(_Source):
    """A QNN-style input list: one line of paths per sample."""

    def __init__(self, path: Path, spec: _Spec, checked: int | None) -> None:
        self.path, self.description, self.spec = path, str(path), spec
        self.count = 0
        for number, entries in self._entries():
            # Existence of the files that will be served is checked up front (cheap,
            # and saves a late failure); their contents only when streamed.
            if checked is None or self.count < checked:
                for name, file in entries.items():
                    if not file.is_file():
                        raise FeedError(f"{path} line {number}: {file}: no such file (input "
                                        f"'{name}'); fix the path (relative paths are relative "
                                        "to the list file)")
            self.count += 1

    def _entries(self) -> Iterator[tuple[int, dict[str, Path]]]:
        base, spec = self.path.parent, self.spec
        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                text = line.strip()
                if not text or text[0] in "#%":
                    continue
                place = f"{self.path} line {number}"
                tokens = text.split()
                if any(":=" in t for t in tokens):
                    entries: dict[str, Path] = {}
                    for token in tokens:
                        name, separator, file = token.partition(":=")
                        if not separator or not name or not file:
                            raise FeedError(f"{place}: '{token}' is not name:=path; write every "
                                            "input of the line as name:=path")
                        if name in entries:
                            raise FeedError(f"{place}: input '{name}' is given twice; give each "
                                            "input once per line")
                        entries[name] = base / file
                    spec.check_names(entries, place)
                elif len(spec.names) != 1:
                    raise FeedError(f"{place}: the model has {len(spec.names)} inputs "
                                    f"({spec.listing()}); write each as name:=path")
                elif len(tokens) != 1:
                    raise FeedError(f"{place}: {len(tokens)} paths on one line; give one path per "
                                    "line (paths cannot contain spaces)")
                else:
                    entries = {spec.names[0]: base / tokens[0]}
                yield number, entries

    def chunks(self, size: int) -> Iterator[_Chunk]:
        for number, entries in self._entries():
            where = f"{self.path} line {number}"
            places = {name: f"{where} ({file.name})" for name, file in entries.items()}
            for name, file in entries.items():
                if not file.is_file():
                    raise FeedError(f"{places[name]}: no such file; fix the path (relative paths "
                                    "are relative to the list file)")
            arrays = {name: _load_sample_file(file, name, self.spec, places[name])
                      for name, file in entries.items()}
            yield _Chunk(arrays, where, "one", places)


class _IterableSource(_Source):
    """Any iterable of {name: array} dicts, each a sample or a batch."""

    description = "calibration data"

    def __init__(self, items: Iterable[Any], spec: _Spec) -> None:
        self.items = items
        self.one_shot = isinstance(items, Iterator)  # iter() could have side effects
        self.read = False
        if isinstance(items, list | tuple):  # in memory already: counting reads nothing
            self.count = sum(self._items_in(item, spec) for item in items)

    @staticmethod
    def _items_in(item: Any, spec: _Spec) -> int:
        if not isinstance(item, Mapping) or spec.names[0] not in item:
            return 1  # malformed: reported with its place when streamed
        shape = np.shape(item[spec.names[0]])
        return int(shape[0]) if len(shape) == len(spec.shapes[0]) + 1 else 1

    def chunks(self, size: int) -> Iterator[_Chunk]:
        if self.one_shot and self.read:
            raise FeedError("calibration data: a one-shot iterator (e.g. a generator) can be read "
                            "only once; pass a list or another re-iterable to read it again")
        self.read = True
        for index, item in enumerate(self.items):
            where = f"calibration data item {index}"
            if not isinstance(item, Mapping):
                raise FeedError(f"{where}: is a {type(item).__name__}, not a dict "
                                "{input name: array}; give one dict per sample or batch")
            yield _Chunk(item, where, "either")


def _open_source(source: Any, spec: _Spec, calibset_size: int | None) -> _Source:
    if isinstance(source, np.ndarray):
        return _ArraySource(source, "calibration array", spec)
    if isinstance(source, Mapping):
        return _IterableSource([source], spec)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.exists():
            raise FeedError(f"{path}: no such file or directory; give a .npy, .npz, a directory of "
                            ".npy files or an input list .txt")
        if path.is_dir():
            return _DirectorySource(path, spec)
        if path.suffix == ".npy":
            return _ArraySource(_read_npy(path, mmap=True), str(path), spec)
        if path.suffix == ".npz":
            return _NpzSource(path, spec)
        if path.suffix == ".txt":
            return _ListSource(path, spec, calibset_size)
        raise FeedError(f"{path}: unsupported calibration data; give a .npy, .npz, a directory "
                        "of .npy files or an input list .txt")
    if isinstance(source, Iterable) and not isinstance(source, bytes):
        return _IterableSource(source, spec)
    raise FeedError(f"calibration data of type {type(source).__name__} is not supported; give a "
                    "path, an array or an iterable of {input name: array} dicts")


class CalibrationData:
    """Samples for calibration, validated against the model's inputs, served in batches.

    See the module docstring for the sources, when each check runs, and the dtype rules.
    """

    def __init__(self, source: Any, input_names: Sequence[str],
                 sample_shapes: Sequence[tuple[int, ...]], input_dtypes: Sequence[np.dtype],
                 calibset_size: int | None = None) -> None:
        if not len(input_names) == len(sample_shapes) == len(input_dtypes) or not input_names:
            raise FeedError(f"calibration: {len(input_names)} input names, {len(sample_shapes)} "
                            f"shapes and {len(input_dtypes)} dtypes; give one of each per model input")
        shapes = tuple(tuple(int(d) for d in shape) for shape in sample_shapes)
        for name, shape in zip(input_names, shapes, strict=True):
            if any(d < 0 for d in shape):
                raise FeedError(f"calibration: input '{name}' has a dynamic shape {shape}; import "
                                "the model with static input shapes")
        self.spec = _Spec(tuple(input_names), shapes, tuple(np.dtype(d) for d in input_dtypes))
        if calibset_size is not None and (isinstance(calibset_size, bool) or
                                          not isinstance(calibset_size, int | np.integer) or
                                          calibset_size < 1):
            raise FeedError(f"calibset_size must be a positive integer, got {calibset_size!r}")
        self.calibset_size = None if calibset_size is None else int(calibset_size)
        self._source = _open_source(source, self.spec, self.calibset_size)
        count = self._source.count
        if count == 0:
            raise FeedError(f"{self._source.description}: no samples; give at least one")
        if self.calibset_size is not None and count is not None and count < self.calibset_size:
            raise self._too_few(count)
        if isinstance(self._source, _ArraySource | _NpzSource):
            self._prepare(self._source.header_chunk(), 0)

    def __len__(self) -> int:
        """The number of samples that will be served."""
        if self.calibset_size is not None:
            return self.calibset_size
        if self._source.count is None:
            raise FeedError("calibration data from a Python iterator has no known length; pass "
                            "calibset_size (or a list)")
        return self._source.count

    def __bool__(self) -> bool:
        return True  # never empty (checked), and len() may be unknown for iterators

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Batches of `batch_size` samples, the last one possibly smaller; each array has a
        leading batch axis. Reads no further than the batch being built."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) \
                or batch_size < 1:
            raise FeedError(f"calibration batch size must be a positive integer, got {batch_size!r}")
        return self._batches(int(batch_size))

    def samples(self) -> Iterator[dict[str, np.ndarray]]:
        """One sample per dict, without the batch axis."""
        for arrays in self._validated(SAMPLES_CHUNK):
            for i in range(len(next(iter(arrays.values())))):
                yield {name: array[i] for name, array in arrays.items()}

    def _batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        pending: list[dict[str, np.ndarray]] = []
        filled = 0
        for arrays in self._validated(batch_size):
            count = len(next(iter(arrays.values())))
            offset = 0
            while offset < count:
                take = min(batch_size - filled, count - offset)
                pending.append({n: a[offset:offset + take] for n, a in arrays.items()})
                filled += take
                offset += take
                if filled == batch_size:  # hand it out before reading any further
                    yield _joined(pending)
                    pending, filled = [], 0
        if pending:
            yield _joined(pending)

    def _validated(self, size: int) -> Iterator[dict[str, np.ndarray]]:
        """Checked, cast chunks of the first `calibset_size` samples."""
        served, limit = 0, self.calibset_size
        for chunk in self._source.chunks(size):
            arrays = self._structure(chunk, served)
            count = len(next(iter(arrays.values())))
            if limit is not None and served + count > limit:
                arrays = {n: a[:limit - served] for n, a in arrays.items()}
                count = limit - served
            arrays = self._values(chunk, arrays, served)
            if count:
                yield arrays
            served += count
            if limit is not None and served >= limit:
                return  # stop before pulling another chunk from the source
        if served == 0:
            raise FeedError(f"{self._source.description}: no samples; give at least one")
        if limit is not None and served < limit:
            raise self._too_few(served)

    def _too_few(self, count: int) -> FeedError:
        return FeedError(f"{self._source.description}: {count} samples, calibset_size asks for "
                         f"{self.calibset_size}; lower calibset_size or add samples")

    def _prepare(self, chunk: _Chunk, start: int) -> dict[str, np.ndarray]:
        return self._values(chunk, self._structure(chunk, start), start)

    def _structure(self, chunk: _Chunk, start: int) -> dict[str, np.ndarray]:
        """Names, shapes and sample counts of a chunk; arrays get a leading sample axis."""
        spec = self.spec
        spec.check_names(chunk.arrays, chunk.where)
        result: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        for name, shape in zip(spec.names, spec.shapes, strict=True):
            array = np.asarray(chunk.arrays[name])
            place = chunk.place(name)
            if chunk.form == "samples" or array.ndim == len(shape) + 1:
                batched = array
            elif array.ndim == len(shape):
                batched = array[np.newaxis]
            else:
                batched = None
            one_sample = chunk.form == "one" and batched is not None and batched.shape[0] != 1
            if batched is None or one_sample or batched.shape[1:] != shape:
                actual = array.shape if batched is None or one_sample else batched.shape[1:]
                raise FeedError(f"{place}: input '{name}' sample {start} has shape "
                                f"{_shape_text(actual)}, expected {_shape_text(shape)}"
                                f"{_shape_hint(chunk.form, shape)}")
            result[name] = batched
            counts[name] = batched.shape[0]
        if len(set(counts.values())) > 1:
            listed = ", ".join(f"'{n}': {c}" for n, c in counts.items())
            raise FeedError(f"{chunk.where}: the inputs have different batch sizes ({listed}); give "
                            "every input the same number of samples")
        return result

    def _values(self, chunk: _Chunk, arrays: dict[str, np.ndarray], start: int) \
            -> dict[str, np.ndarray]:
        """Dtype conversion and the NaN / Inf check of (possibly truncated) arrays."""
        result = {}
        for name, dtype in zip(self.spec.names, self.spec.dtypes, strict=True):
            array = _cast(arrays[name], name, dtype, chunk.place(name), start)
            if dtype.kind == "f":
                _check_finite(array, name, chunk.place(name), start)
            result[name] = array
        return result


def _shape_hint(form: str, shape: tuple[int, ...]) -> str:
    if form == "samples":
        return " (the first axis counts samples)"
    if form == "one":
        return f" (or {_shape_text((1, *shape))}); store one sample per file"
    return f" (or (b{''.join(f', {d}' for d in shape)}) for a batch of b)"


def _cast(array: np.ndarray, name: str, dtype: np.dtype, place: str, start: int) -> np.ndarray:
    given = array.dtype
    if given == dtype:
        return array
    if given.kind == "f" and dtype.kind == "f":
        return array.astype(dtype)
    if given.kind in "iu" and dtype.kind in "iu":
        if not np.can_cast(given, dtype) and array.size:
            info = np.iinfo(dtype)
            if array.min() < info.min or array.max() > info.max:
                raise FeedError(f"{place}: input '{name}' (from sample {start}) has values outside "
                                f"{dtype}, the model's dtype; fix the data")
        return array.astype(dtype)
    raise FeedError(f"{place}: input '{name}' is {given}, but the model expects {dtype}; convert "
                    f"it with .astype(np.{dtype}) (and scale it as the model expects)")


def _check_finite(array: np.ndarray, name: str, place: str, start: int) -> None:
    finite = np.isfinite(array)
    if finite.all():
        return
    bad = int(np.argmin(finite.reshape(len(array), -1).all(axis=1)))
    what = "NaN" if np.isnan(array[bad]).any() else "Inf"
    raise FeedError(f"{place}: input '{name}' sample {start + bad} contains {what}; fix or drop "
                    "that sample")


def _joined(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def load_calibration_data(source: Any, input_names: Sequence[str],
                          sample_shapes: Sequence[tuple[int, ...]],
                          input_dtypes: Sequence[np.dtype],
                          calibset_size: int | None = None) -> CalibrationData:
    """`CalibrationData(...)`: the calibration samples of `source` for these model inputs."""
    return CalibrationData(source, input_names, sample_shapes, input_dtypes, calibset_size)
