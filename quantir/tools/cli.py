"""`quantir`: the user-facing command line.

    quantir quantize MODEL.onnx --calib DATA -o OUTDIR [--script S.alls] [...]
        calibrates and quantizes; writes OUTDIR/model.q.mlir, OUTDIR/model.qir.mlir
        (the integer program) and OUTDIR/encodings.json
        [--target T [--legalize] [--report FILE.json]]: checks (repairs) for a target
        before writing anything
    quantir targets [show NAME]
        lists the hardware targets, or prints one's rules
    quantir run MODEL --input NAME=FILE.npy ... -o OUTDIR
        runs an .onnx, .mlir or .qir.mlir model (a float graph, a quantization-annotated
        module in simulation, or the integer program) and writes OUTDIR/<output>.npy
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from quantir.errors import FeedError, QuantirError
from quantir.tools.common import fail, one_line_warnings, parse_shape_args, wants_debug
from quantir.tools.targets_cli import (
    add_target_arguments,
    add_targets_command,
    apply_target,
    check_program,
)


def build_parser() -> argparse.ArgumentParser:
    from quantir import __version__

    parser = argparse.ArgumentParser(prog="quantir", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"quantir {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a model on .npy inputs")
    run.add_argument("model", help="an .onnx model or a .mlir module")
    run.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy",
                     help="an input array; a single-input model may take just FILE.npy")
    run.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                     help="fix an ONNX input's dynamic dimensions (default batch 1)")
    run.add_argument("-o", "--output-dir", required=True, help="directory for the outputs")
    run.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    run.set_defaults(handler=command_run)

    quantize = commands.add_parser(
        "quantize", help="calibrate and quantize an ONNX model",
        description="Writes OUTDIR/model.q.mlir (the quantization-annotated module), "
                    "OUTDIR/model.qir.mlir (the integer program, for `quantir run`), "
                    "OUTDIR/encodings.json (AIMET format) and prints a per-layer summary.")
    quantize.add_argument("model", help="an .onnx model")
    quantize.add_argument("--calib", required=True, metavar="DATA",
                          help=".npy, .npz, a directory of .npy files or a QNN input list")
    quantize.add_argument("-o", "--output-dir", required=True)
    quantize.add_argument("--script", help="a model script (Hailo .alls syntax)")
    quantize.add_argument("--overrides", help="a QNN / AIMET quantization overrides JSON")
    quantize.add_argument("--precision", help="default precision mode (a8_w8, a8_w4, a16_w16, "
                                              "a16_w16_a8, ...)")
    quantize.add_argument("--calib-method",
                          help="minmax, moving_average, mse, entropy or percentile")
    quantize.add_argument("--calibset-size", type=int, help="samples to calibrate on")
    quantize.add_argument("--batch-size", type=int, help="calibration batch size")
    quantize.add_argument("--weights", choices=["per-channel", "per-tensor"])
    quantize.add_argument("--activations", choices=["asymmetric", "symmetric"])
    quantize.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                          help="fix an ONNX input's dynamic dimensions (default batch 1)")
    quantize.add_argument("--rounding", choices=["single", "tflite", "tosa"],
                          help="requantization rounding of the integer program (default "
                               "single, or the target's when it has no single)")
    add_target_arguments(quantize)
    quantize.add_argument("--print-pipeline", action="store_true",
                          help="print the equivalent quantir-opt pass pipeline and exit "
                               "(replay it with quantir-opt MODEL -p '...' "
                               "--print-ir-after-all)")
    quantize.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    quantize.set_defaults(handler=command_quantize)
    add_targets_command(commands)
    return parser


def command_quantize(args: argparse.Namespace) -> None:
    import json
    import tempfile

    from quantir.ir import print_module
    from quantir.lowering.lower_to_int import lower_to_int
    from quantir.passes.presets import quantize_model
    from quantir.passes.qconfig import QuantConfig

    config = QuantConfig.build(
        precision=args.precision, weights=args.weights, activations=args.activations,
        script=args.script, overrides=args.overrides, method=args.calib_method,
        calibset_size=args.calibset_size, batch_size=args.batch_size)
    if args.print_pipeline:
        print(quantize_pipeline(config, args))
        return
    result = quantize_model(args.model, args.calib, config,
                            parse_shape_args(args.input_shape) or None)
    rounding = apply_target(result.module, config, args)  # raises, writing nothing, if illegal
    program = lower_to_int(result.module, rounding)
    check_program(program, args)
    activations, params = result.encodings()
    texts = {
        "model.q.mlir": print_module(result.module, elide_limit=None),
        "model.qir.mlir": print_module(program, elide_limit=None),
        "encodings.json": json.dumps({"version": "0.6.1", "activation_encodings": activations,
                                      "param_encodings": params}, indent=2) + "\n",
    }
    # Everything is computed before anything is written; files appear whole or not at all.
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".quantir-") as staging:
        for name, text in texts.items():
            (Path(staging) / name).write_text(text)
        for name in texts:
            (Path(staging) / name).replace(out / name)
    print_summary(result.summary())
    for name in texts:
        print(f"wrote {out / name}")


def quantize_pipeline(config: object, args: argparse.Namespace) -> str:
    """The quantir-opt pipeline doing what this `quantir quantize` command does."""
    from quantir.passes.presets import preset_pipeline
    from quantir.targets import load_target
    from quantir.tools.targets_cli import target_rounding

    target = load_target(args.target)
    return preset_pipeline(
        config, args.calib, precision=args.precision, weights=args.weights,
        activations=args.activations, script=args.script, overrides=args.overrides,
        rounding=target_rounding(target, args.rounding),
        target=None if target.name == "cpu-ref" and not args.legalize else target.name,
        legalize=args.legalize)


def print_summary(rows: Sequence) -> None:  # type: ignore[type-arg]
    headers = ("layer", "op", "precision", "output scale", "weight scales", "set by")
    table = [(r.layer, r.op, r.precision, r.output_scale, r.weight_scales, r.source)
             for r in rows]
    widths = [max(len(h), *(len(str(row[i])) for row in table)) if table else len(h)
              for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def command_run(args: argparse.Namespace) -> None:
    from quantir.runtime.session import Session

    shapes = parse_shape_args(args.input_shape)
    given = _parse_inputs(args.input)
    if shapes == {} and args.model.endswith(".onnx"):
        # Size the dynamic dimensions from the arrays the user gave.
        shapes = _shapes_from_inputs(args.model, given)
    session = Session(args.model, shapes or None)
    feeds = _bind_inputs(session.input_names, given)
    outputs = session.run(feeds)
    write_outputs(Path(args.output_dir), outputs)
    for name, array in outputs.items():
        print(f"{name}: {array.dtype} {list(array.shape)} -> "
              f"{Path(args.output_dir) / output_file_name(name)}")


def _parse_inputs(items: Sequence[str]) -> dict[str | None, np.ndarray]:
    arrays: dict[str | None, np.ndarray] = {}
    for item in items:
        name, sep, path = item.rpartition("=")
        key = name if sep else None
        arrays[key] = load_npy(Path(path))
    if not arrays:
        raise FeedError("no input given; pass --input NAME=FILE.npy (or --input FILE.npy for a "
                        "single-input model)")
    if None in arrays and len(arrays) > 1:
        raise FeedError("give every input as NAME=FILE.npy when there are several")
    return arrays


def load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FeedError(f"{path}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise FeedError(f"{path}: not a readable .npy array ({error})") from error


def _shapes_from_inputs(model: str, given: dict[str | None, np.ndarray]) -> dict[str, list[int]]:
    from quantir.frontend.onnx_import import load_onnx

    graph = load_onnx(model).graph
    initializers = {init.name for init in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initializers]
    if None in given:
        if len(names) != 1:
            raise FeedError(f"the model has {len(names)} inputs ({', '.join(names)}); "
                            "give each as --input NAME=FILE.npy")
        return {names[0]: list(given[None].shape)}
    return {name: list(array.shape) for name, array in given.items() if name in names}


def _bind_inputs(names: Sequence[str], given: dict[str | None, np.ndarray]) \
        -> dict[str, np.ndarray]:
    if None in given:
        if len(names) != 1:
            raise FeedError(f"the model has {len(names)} inputs ({', '.join(names)}); "
                            "give each as --input NAME=FILE.npy")
        return {names[0]: given[None]}
    return {name: array for name, array in given.items() if name is not None}


def output_file_name(name: str) -> str:
    """A file name for an output (ONNX names may contain '/' or ':')."""
    return re.sub(r"[^\w.\-]", "_", name) + ".npy"


def write_outputs(directory: Path, outputs: dict[str, np.ndarray]) -> None:
    """Write every output, or nothing: files appear only once all are written."""
    directory.mkdir(parents=True, exist_ok=True)
    staged = []
    try:
        for name, array in outputs.items():
            final = directory / output_file_name(name)
            temporary = final.with_name(f".{final.name}.tmp")
            with open(temporary, "wb") as stream:
                np.save(stream, array)
            staged.append((temporary, final))
        for temporary, final in staged:
            temporary.replace(final)
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(args_list)
    try:
        with one_line_warnings("quantir"):
            args.handler(args)
    except (QuantirError, OSError, Exception) as error:  # noqa: BLE001 - one line each
        return fail("quantir", error, wants_debug(args_list))
    return 0


if __name__ == "__main__":
    sys.exit(main())
