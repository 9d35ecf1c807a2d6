"""`quantir.Session`: run an ONNX file, a `.mlir` file or a module on numpy inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from quantir.errors import FeedError, ModelError
from quantir.frontend.onnx_import import graph_names, import_onnx
from quantir.ir import dtype_of, load_module, shape_of
from quantir.runtime.executor import Observer, Program, main_function


def load_any(source: str | Path | ModuleOp,
             input_shapes: Mapping[str, Sequence[int]] | None = None) -> ModuleOp:
    """A module from an `.onnx` path, an `.mlir` path, or a module as is."""
    if isinstance(source, ModuleOp):
        return source
    path = Path(source)
    if path.suffix == ".onnx":
        return import_onnx(path, input_shapes)
    if path.suffix == ".mlir":
        return load_module(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    raise ModelError(f"{path}: unknown model format; give an .onnx or .mlir file")


class Session:
    """Runs the module's `@main` with the numpy kernels.

    `run(feeds, observer=...)` hands every computed value to the observer as
    `observer(ssa_value, array)` (arguments first, then each op's results in order).
    A module whose inputs and outputs all have batch 1 also runs a batch of N > 1
    samples, one at a time (the observer then sees each sample's run in turn).
    """

    def __init__(self, source: str | Path | ModuleOp,
                 input_shapes: Mapping[str, Sequence[int]] | None = None):
        self.module = load_any(source, input_shapes)
        self.from_onnx = isinstance(source, str | Path) and Path(source).suffix == ".onnx"
        function = main_function(self.module)
        self.input_names, self.output_names = graph_names(function)
        self.input_shapes = [shape_of(t) for t in function.function_type.inputs]
        self.output_shapes = [shape_of(t) for t in function.function_type.outputs]
        self.input_dtypes = [dtype_of(t.element_type)  # type: ignore[attr-defined]
                             for t in function.function_type.inputs]
        # Observed runs take every op as it is; plain runs take the fused plan.
        self.program = Program(function)
        self.fast_program = Program(function, fuse=True)

    def run(self, feeds: Mapping[str, np.ndarray],
            observer: Observer | None = None) -> dict[str, np.ndarray]:
        batch = self._sample_batch(feeds)
        if batch is not None:
            # A module built for batch 1 (an integer program, say) runs a batch of N
            # one sample at a time, as its batch-1 shapes were computed.
            runs = [self.run({name: np.asarray(array)[i:i + 1] for name, array in feeds.items()},
                             observer)
                    for i in range(batch)]
            return {name: np.concatenate([run[name] for run in runs])
                    for name in self.output_names}
        inputs = self._check_feeds(feeds)
        program = self.program if observer is not None else self.fast_program
        outputs = program.run(inputs, observer)
        return dict(zip(self.output_names, outputs, strict=True))

    def _sample_batch(self, feeds: Mapping[str, np.ndarray]) -> int | None:
        """N when every input and output of the module has batch 1 and every feed is a
        batch of N > 1 samples of the right shape; else None (feeds checked as given)."""
        if set(feeds) != set(self.input_names) or \
                any(not shape or shape[0] != 1
                    for shape in [*self.input_shapes, *self.output_shapes]):
            return None
        arrays = [np.asarray(feeds[name]) for name in self.input_names]
        sizes = {array.shape[0] if array.ndim else 0 for array in arrays}
        if len(sizes) != 1 or sizes == {0} or sizes == {1}:
            return None
        if any(tuple(array.shape[1:]) != tuple(shape[1:])
               for array, shape in zip(arrays, self.input_shapes, strict=True)):
            return None
        return sizes.pop()

    def _check_feeds(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        unknown = sorted(set(feeds) - set(self.input_names))
        if unknown:
            raise FeedError(f"unknown input {', '.join(map(repr, unknown))}; "
                            f"the model's inputs are {', '.join(map(repr, self.input_names))}")
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise FeedError(f"missing input {', '.join(map(repr, missing))}; "
                            f"the model's inputs are {', '.join(map(repr, self.input_names))}")
        arrays = []
        for name, shape, dtype in zip(self.input_names, self.input_shapes, self.input_dtypes,
                                      strict=True):
            array = np.asarray(feeds[name])
            if array.dtype != dtype:
                raise FeedError(f"input '{name}' has dtype {array.dtype}, the model expects "
                                f"{dtype}; convert it with .astype(np.{dtype})")
            if tuple(array.shape) != tuple(shape):
                wanted = f"{name}={','.join(map(str, array.shape))}"
                fix = (f"import the model with input_shapes / --input-shape {wanted}"
                       if self.from_onnx else
                       f"this module was built for that shape: rebuild it from the ONNX "
                       f"model with --input-shape {wanted}")
                raise FeedError(f"input '{name}' has shape {list(array.shape)}, the model "
                                f"expects {list(shape)}; {fix}")
            arrays.append(array)
        return arrays
