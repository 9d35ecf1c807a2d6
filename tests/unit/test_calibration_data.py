"""Calibration data: every source form, batching, calibset_size, laziness, one-line errors."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quantir.errors import QuantirError
from quantir.passes.calibration_data import CalibrationData, load_calibration_data

SHAPE = (1, 8, 8)


def digits(count: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (count, *SHAPE)).astype(np.float32)


def single(source: Any, calibset_size: int | None = None, dtype: Any = np.float32) -> CalibrationData:
    return load_calibration_data(source, ["input"], [SHAPE], [dtype], calibset_size)


def pair(source: Any, calibset_size: int | None = None) -> CalibrationData:
    return load_calibration_data(source, ["a", "b"], [(3,), (2, 2)], [np.float32, np.int64],
                                 calibset_size)


def error_of(action: Callable[[], object]) -> str:
    """The message of the QuantirError `action` raises, checked to be one line."""
    with pytest.raises(QuantirError) as caught:
        action()
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def everything(data: CalibrationData, batch_size: int) -> list[dict[str, np.ndarray]]:
    return list(data.batches(batch_size))


def stacked(batches: list[dict[str, np.ndarray]], name: str = "input") -> np.ndarray:
    return np.concatenate([b[name] for b in batches])


# --- sources ------------------------------------------------------------------------


def test_npy_batches_with_a_short_last_batch(tmp_path: Path) -> None:
    x = digits(40)
    np.save(tmp_path / "calib.npy", x)
    data = single(tmp_path / "calib.npy")
    assert len(data) == 40
    batches = everything(data, 16)
    assert [b["input"].shape for b in batches] == [(16, *SHAPE), (16, *SHAPE), (8, *SHAPE)]
    assert all(type(b["input"]) is np.ndarray for b in batches)  # not views of the memmap
    np.testing.assert_array_equal(stacked(batches), x)


def test_npy_float64_is_cast_to_the_model_dtype(tmp_path: Path) -> None:
    x = digits(10).astype(np.float64)
    np.save(tmp_path / "calib.npy", x)
    batch = next(single(tmp_path / "calib.npy").batches(10))["input"]
    assert batch.dtype == np.float32
    np.testing.assert_array_equal(batch, x.astype(np.float32))


def test_in_memory_array_is_like_an_npy() -> None:
    x = digits(7)
    np.testing.assert_array_equal(stacked(everything(single(x), 3)), x)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_streams_every_input(tmp_path: Path, save: Callable[..., None]) -> None:
    a = np.arange(30, dtype=np.float32).reshape(10, 3)
    b = np.arange(40, dtype=np.int32).reshape(10, 2, 2)
    save(tmp_path / "calib.npz", a=a, b=b)
    batches = everything(pair(tmp_path / "calib.npz"), 4)
    assert [x["a"].shape[0] for x in batches] == [4, 4, 2]
    np.testing.assert_array_equal(stacked(batches, "a"), a)
    np.testing.assert_array_equal(stacked(batches, "b"), b)
    assert batches[0]["b"].dtype == np.int64  # int32 data for an int64 input: cast


def test_npz_is_never_loaded_whole(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((512, 64, 64)).astype(np.float32)  # 8 MiB
    np.savez(tmp_path / "big.npz", input=x)
    np.save(tmp_path / "big.npy", x)
    del x
    for name in ("big.npz", "big.npy"):
        data = load_calibration_data(tmp_path / name, ["input"], [(64, 64)], [np.float32])
        tracemalloc.start()
        for _ in data.batches(16):
            pass
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 2 * 2**20, (name, peak)  # one batch is 256 KiB, the file 8 MiB


def test_directory_of_npy_files_sorted_by_name(tmp_path: Path) -> None:
    x = digits(5)
    for i in range(5):  # names sort differently from creation order
        sample = x[i] if i % 2 else x[i][np.newaxis]  # sample-shaped or a leading axis of 1
        np.save(tmp_path / f"{4 - i:02d}.npy", sample)
    (tmp_path / "labels.txt").write_text("ignored")
    batches = everything(single(tmp_path), 2)
    assert [b["input"].shape[0] for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(stacked(batches), x[::-1])


def test_directory_with_raw_files(tmp_path: Path) -> None:
    x = digits(3)
    for i in range(3):
        x[i].tofile(tmp_path / f"{i}.raw")
    np.testing.assert_array_equal(stacked(everything(single(tmp_path), 3)), x)


def test_directory_with_one_subdirectory_per_input(tmp_path: Path) -> None:
    a = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    b = np.arange(16).reshape(4, 2, 2)
    for name, array in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        for i, sample in enumerate(array):
            np.save(tmp_path / name / f"s{i}.npy", sample)
    (tmp_path / ".cache").mkdir()  # hidden: ignored
    batches = everything(pair(tmp_path), 3)
    np.testing.assert_array_equal(stacked(batches, "a"), a)
    np.testing.assert_array_equal(stacked(batches, "b"), b)


def test_input_list_single_input(tmp_path: Path) -> None:
    x = digits(3)
    (tmp_path / "raw").mkdir()
    x[0].tofile(tmp_path / "raw" / "zero.raw")
    np.save(tmp_path / "one.npy", x[1])
    x[2].tofile(tmp_path / "two.rawtensor")
    (tmp_path / "list.txt").write_text(
        "#output_layer\n%output_tensor\n\nraw/zero.raw\n" f"{tmp_path / 'one.npy'}\ntwo.rawtensor\n")
    data = single(tmp_path / "list.txt")
    assert len(data) == 3
    np.testing.assert_array_equal(stacked(everything(data, 2)), x)


def test_input_list_several_inputs(tmp_path: Path) -> None:
    lines = []
    for i in range(3):
        np.full(3, i, np.float32).tofile(tmp_path / f"a{i}.raw")
        np.full((2, 2), i, np.int64).tofile(tmp_path / f"b{i}.raw")  # int inputs: own dtype
        lines.append(f"b:=b{i}.raw a:=a{i}.raw")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    batches = everything(pair(tmp_path / "list.txt"), 2)
    np.testing.assert_array_equal(stacked(batches, "a")[:, 0], [0, 1, 2])
    np.testing.assert_array_equal(stacked(batches, "b")[:, 1, 1], [0, 1, 2])


def test_iterable_of_samples_and_batches() -> None:
    x = digits(7)
    items = [{"input": x[0]}, {"input": x[1:5]}, {"input": x[5]}, {"input": x[6:7]}]
    data = single(items)
    assert len(data) == 7  # a list is counted without reading anything
    batches = everything(data, 3)
    assert [b["input"].shape[0] for b in batches] == [3, 3, 1]
    np.testing.assert_array_equal(stacked(batches), x)
    np.testing.assert_array_equal(stacked(everything(data, 2)), x)  # a list is re-iterable


def test_a_single_dict_is_one_item() -> None:
    x = digits(5)
    np.testing.assert_array_equal(stacked(everything(single({"input": x}), 2)), x)


def test_samples_have_no_batch_axis(tmp_path: Path) -> None:
    x = digits(5)
    np.save(tmp_path / "calib.npy", x)
    samples = list(single(tmp_path / "calib.npy").samples())
    assert len(samples) == 5 and samples[0]["input"].shape == SHAPE
    np.testing.assert_array_equal(samples[3]["input"], x[3])


# --- calibset_size ------------------------------------------------------------------


def test_calibset_size_takes_the_first_samples(tmp_path: Path) -> None:
    x = digits(40)
    np.savez(tmp_path / "calib.npz", input=x)
    data = single(tmp_path / "calib.npz", calibset_size=25)
    assert len(data) == 25
    batches = everything(data, 10)
    assert [b["input"].shape[0] for b in batches] == [10, 10, 5]
    np.testing.assert_array_equal(stacked(batches), x[:25])
    assert len(list(data.samples())) == 25


def test_calibset_size_splits_an_iterable_batch() -> None:
    x = digits(8)
    batches = everything(single([{"input": x}], calibset_size=5), 4)
    np.testing.assert_array_equal(stacked(batches), x[:5])


def test_samples_past_calibset_size_are_never_checked(tmp_path: Path) -> None:
    x = digits(6)
    x[5, 0, 0, 0] = np.nan
    for i in range(6):
        np.save(tmp_path / f"{i}.npy", x[i])
    (tmp_path / "4.npy").write_bytes(b"garbage")
    assert len(stacked(everything(single(tmp_path, calibset_size=4), 3))) == 4


# --- laziness -----------------------------------------------------------------------


class Counted:
    """A one-shot stream of samples that raises after `limit` items and counts pulls."""

    def __init__(self, x: np.ndarray, limit: int) -> None:
        self.x, self.limit, self.pulled = x, limit, 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for sample in self.x:
            if self.pulled == self.limit:
                raise AssertionError("read past what was needed")
            self.pulled += 1
            yield {"input": sample}


def test_an_iterable_is_read_only_as_far_as_needed() -> None:
    stream = Counted(digits(20), limit=6)
    batches = single(stream, calibset_size=6).batches(4)
    assert next(batches)["input"].shape[0] == 4
    assert stream.pulled == 4  # the first batch came out before the fifth sample was read
    assert next(batches)["input"].shape[0] == 2
    assert stream.pulled == 6
    assert next(batches, None) is None  # stopped at calibset_size without pulling a 7th


def test_a_generator_can_be_read_once() -> None:
    x = digits(4)
    data = single({"input": s} for s in x)
    assert bool(data)
    assert "no known length" in error_of(lambda: len(data))
    np.testing.assert_array_equal(stacked(everything(data, 3)), x)
    assert "read only once" in error_of(lambda: everything(data, 3))


def test_errors_come_when_the_bad_sample_is_reached() -> None:
    x = digits(6)
    x[4, 0, 1, 1] = np.inf
    batches = single([{"input": s} for s in x]).batches(2)
    assert next(batches)["input"].shape[0] == 2
    assert next(batches)["input"].shape[0] == 2
    assert "sample 4 contains Inf" in error_of(lambda: next(batches))


# --- errors -------------------------------------------------------------------------


def test_missing_source(tmp_path: Path) -> None:
    message = error_of(lambda: single(tmp_path / "nowhere.npz"))
    assert "nowhere.npz: no such file or directory" in message


def test_unsupported_source(tmp_path: Path) -> None:
    (tmp_path / "calib.csv").write_text("1,2")
    assert "calib.csv: unsupported calibration data" in error_of(lambda: single(tmp_path / "calib.csv"))
    assert "type int is not supported" in error_of(lambda: single(3))


def test_fewer_samples_than_calibset_size(tmp_path: Path) -> None:
    np.savez(tmp_path / "digits.npz", input=digits(40))
    message = error_of(lambda: single(tmp_path / "digits.npz", calibset_size=64))
    assert message.startswith(f"{tmp_path / 'digits.npz'}: 40 samples, calibset_size asks for 64")


def test_an_iterable_that_ends_early() -> None:
    data = single(({"input": s} for s in digits(3)), calibset_size=5)
    assert "calibration data: 3 samples, calibset_size asks for 5" in error_of(
        lambda: everything(data, 2))


def test_fewer_files_than_calibset_size(tmp_path: Path) -> None:
    np.save(tmp_path / "0.npy", digits(1)[0])
    assert "1 samples, calibset_size asks for 2" in error_of(lambda: single(tmp_path, 2))


@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")])
def test_nan_or_inf_names_input_and_sample(tmp_path: Path, value: float, word: str) -> None:
    x = digits(40)
    x[17, 0, 2, 5] = value
    np.savez(tmp_path / "calib.npz", input=x)
    message = error_of(lambda: everything(single(tmp_path / "calib.npz"), 16))
    assert message.startswith(f"{tmp_path / 'calib.npz'}: input 'input' sample 17 contains {word}")


def test_nan_in_a_directory_names_the_file(tmp_path: Path) -> None:
    x = digits(3)
    x[2, 0, 0, 0] = np.nan
    for i in range(3):
        np.save(tmp_path / f"{i}.npy", x[i])
    message = error_of(lambda: everything(single(tmp_path), 2))
    assert message.startswith(f"{tmp_path / '2.npy'}: input 'input' sample 2 contains NaN")


def test_shape_mismatch_in_an_npz_is_found_up_front(tmp_path: Path) -> None:
    np.savez(tmp_path / "calib.npz", input=np.zeros((10, 8, 8), np.float32))
    message = error_of(lambda: single(tmp_path / "calib.npz"))
    assert "input 'input' sample 0 has shape (8, 8), expected (1, 8, 8)" in message


def test_shape_mismatch_in_a_stream_names_the_sample() -> None:
    items = [{"input": np.zeros(SHAPE, np.float32)}] * 3 + [{"input": np.zeros((1, 8, 7), np.float32)}]
    message = error_of(lambda: everything(single(items), 2))
    assert message.startswith("calibration data item 3: input 'input' sample 3 has shape (1, 8, 7), "
                              "expected (1, 8, 8)")


def test_shape_mismatch_in_a_directory(tmp_path: Path) -> None:
    np.save(tmp_path / "0.npy", np.zeros(SHAPE, np.float32))
    np.save(tmp_path / "1.npy", np.zeros((2, *SHAPE), np.float32))  # two samples in one file
    message = error_of(lambda: everything(single(tmp_path), 2))
    assert "1.npy: input 'input' sample 1 has shape (2, 1, 8, 8), expected (1, 8, 8)" in message


def test_raw_file_of_the_wrong_size(tmp_path: Path) -> None:
    np.zeros(10, np.float32).tofile(tmp_path / "x.raw")
    (tmp_path / "list.txt").write_text("x.raw\n")
    message = error_of(lambda: everything(single(tmp_path / "list.txt"), 1))
    assert "list.txt line 1 (x.raw): 40 bytes, but input 'input' needs 256" in message


def test_int_data_for_a_float_input(tmp_path: Path) -> None:
    np.save(tmp_path / "calib.npy", np.zeros((4, *SHAPE), np.uint8))
    message = error_of(lambda: single(tmp_path / "calib.npy"))
    assert "input 'input' is uint8, but the model expects float32" in message


def test_float_data_for_an_int_input() -> None:
    items = [{"a": np.zeros(3, np.float32), "b": np.zeros((2, 2), np.float32)}]
    assert "input 'b' is float32, but the model expects int64" in error_of(
        lambda: everything(pair(items), 1))


def test_ints_outside_the_model_dtype() -> None:
    items = [{"input": np.full((2,), 2**40, np.int64)}]
    data = load_calibration_data(items, ["input"], [(2,)], [np.int32])
    assert "values outside int32" in error_of(lambda: everything(data, 1))


def test_unknown_and_missing_inputs(tmp_path: Path) -> None:
    np.savez(tmp_path / "calib.npz", a=np.zeros((2, 3), np.float32), c=np.zeros((2, 2, 2)))
    message = error_of(lambda: pair(tmp_path / "calib.npz"))
    assert "unknown input 'c'; the model's inputs are 'a', 'b'" in message
    np.savez(tmp_path / "calib.npz", a=np.zeros((2, 3), np.float32))
    assert "missing input 'b'; the model's inputs are 'a', 'b'" in error_of(
        lambda: pair(tmp_path / "calib.npz"))
    items = [{"a": np.zeros(3, np.float32)}]
    assert "calibration data item 0: missing input 'b'" in error_of(lambda: everything(pair(items), 1))


def test_npz_with_different_counts(tmp_path: Path) -> None:
    np.savez(tmp_path / "calib.npz", a=np.zeros((2, 3), np.float32), b=np.zeros((3, 2, 2), np.int64))
    assert "different sample counts ('a': 2, 'b': 3)" in error_of(lambda: pair(tmp_path / "calib.npz"))


def test_npy_for_a_model_with_several_inputs(tmp_path: Path) -> None:
    np.save(tmp_path / "calib.npy", np.zeros((2, 3), np.float32))
    message = error_of(lambda: pair(tmp_path / "calib.npy"))
    assert "calib.npy: one array cannot feed a model with 2 inputs ('a', 'b')" in message


def test_directory_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "0.npy", np.zeros(3, np.float32))
    assert "the model has 2 inputs ('a', 'b'); put each input's files in a subdirectory" in error_of(
        lambda: pair(tmp_path))
    for name, count in (("a", 2), ("b", 1), ("c", 1)):
        (tmp_path / name).mkdir()
        for i in range(count):
            np.save(tmp_path / name / f"{i}.npy", np.zeros(3))
    assert "subdirectory 'c' is not an input; the model's inputs are 'a', 'b'" in error_of(
        lambda: pair(tmp_path))
    (tmp_path / "c" / "0.npy").unlink()
    (tmp_path / "c").rmdir()
    assert "different numbers of files ('a': 2, 'b': 1)" in error_of(lambda: pair(tmp_path))
    (tmp_path / "empty").mkdir()
    assert "empty: no .npy or .raw files" in error_of(lambda: single(tmp_path / "empty"))


def test_input_list_errors(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("# outputs\nmissing.raw\n")
    assert "list.txt line 2: " in error_of(lambda: single(listing))
    assert "missing.raw: no such file" in error_of(lambda: single(listing))
    np.zeros(3, np.float32).tofile(tmp_path / "a.raw")
    listing.write_text("a.raw\n")
    assert "list.txt line 1: the model has 2 inputs ('a', 'b'); write each as name:=path" in error_of(
        lambda: pair(listing))
    listing.write_text("a:=a.raw b\n")
    assert "line 1: 'b' is not name:=path" in error_of(lambda: pair(listing))
    listing.write_text("a:=a.raw z:=a.raw\n")
    assert "line 1: unknown input 'z'; the model's inputs are 'a', 'b'" in error_of(lambda: pair(listing))


def test_bad_arguments(tmp_path: Path) -> None:
    x = digits(4)
    assert "calibset_size must be a positive integer, got 0" in error_of(lambda: single(x, 0))
    assert "batch size must be a positive integer, got 0" in error_of(lambda: single(x).batches(0))
    assert "is a str, not a dict" in error_of(lambda: everything(single(["input"]), 1))
