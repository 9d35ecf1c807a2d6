"""`quantir-opt`: xDSL's opt driver with quantir's dialects, passes and ONNX frontend.

    quantir-opt model.onnx -p fold-constants,cse --print-ir-after-all -o out.mlir

Differences from `xdsl-opt`: `.onnx` input (with `--input-shape`), constants above
`--elide-limit` elements print as `dense_resource<__elided__>` unless
`--print-large-constants`, `--print-ir-after-all` (after every pass, the last one
included), output written only when everything succeeded, and user errors as one
line on stderr (`--debug` for the traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from io import StringIO
from pathlib import Path
from typing import IO

from quantir.errors import QuantirError
from quantir.tools.common import fail, one_line_warnings, parse_shape_args, wants_debug


def _opt_main_class() -> type:
    # xDSL is imported here, not at module level, so `--help` and errors stay fast.
    from xdsl.dialects.builtin import ModuleOp
    from xdsl.passes import ModulePass
    from xdsl.xdsl_opt_main import xDSLOptMain

    from quantir import __version__
    from quantir.ir import DEFAULT_ELIDE_LIMIT, QuantirPrinter

    class QuantirOptMain(xDSLOptMain):
        version_format = f"quantir-opt {__version__} (xDSL {{xdsl_version}})"

        def register_all_dialects(self) -> None:
            from xdsl.dialects.arith import Arith
            from xdsl.dialects.builtin import Builtin
            from xdsl.dialects.func import Func

            from quantir.dialects import all_dialects

            for dialect in (Builtin, Func, Arith, *all_dialects()):
                self.ctx.register_dialect(dialect.name, lambda d=dialect: d)

        def register_all_passes(self) -> None:
            from quantir.passes import available_passes

            for name, factory in available_passes().items():
                self.register_pass(name, factory)

        def register_all_frontends(self) -> None:
            super().register_all_frontends()

            def parse_onnx(_stream: IO[bytes]) -> ModuleOp:
                from quantir.frontend.onnx_import import import_onnx

                if self.args.input_file is None:
                    raise QuantirError("ONNX input must be a file path, not stdin")
                return import_onnx(self.args.input_file, parse_shape_args(self.args.input_shape))

            self.available_frontends["onnx"] = parse_onnx

        def register_all_arguments(self, arg_parser: argparse.ArgumentParser) -> None:
            super().register_all_arguments(arg_parser)
            arg_parser.add_argument(
                "--print-ir-after-all", action="store_true",
                help="print the IR after every pass (the last one included) to stderr")
            arg_parser.add_argument(
                "--print-large-constants", action="store_true",
                help="print every constant whole (needed to run or reload the output)")
            arg_parser.add_argument(
                "--elide-limit", type=int, default=DEFAULT_ELIDE_LIMIT,
                help="constants with more elements print as dense_resource<__elided__> "
                     f"(default {DEFAULT_ELIDE_LIMIT})")
            arg_parser.add_argument(
                "--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                help="fix an ONNX input's shape (dynamic dimensions); repeatable")
            arg_parser.add_argument("--debug", action="store_true",
                                    help="show the Python traceback of an error")

        def _elide_limit(self) -> int | None:
            return None if self.args.print_large_constants else self.args.elide_limit

        def print_module_text(self, module: ModuleOp) -> str:
            out = StringIO()
            printer = QuantirPrinter(
                stream=out, elide_limit=self._elide_limit(),
                print_generic_format=self.args.print_op_generic,
                print_properties_as_attributes=self.args.print_no_properties,
                print_debuginfo=self.args.print_debuginfo)
            printer.print_op(module)
            out.write("\n")
            return out.getvalue()

        def setup_pipeline(self) -> None:
            from quantir.passes import parse_pipeline

            def callback(previous: ModulePass | None, module: ModuleOp,
                         _next: ModulePass | None) -> None:
                if not self.args.disable_verify:
                    module.verify()
                if previous is not None and self.args.print_ir_after_all:
                    sys.stderr.write(f"// -----// IR Dump After {previous.name} //----- //\n")
                    sys.stderr.write(self.print_module_text(module))
                    sys.stderr.flush()

            self.pipeline = parse_pipeline(self.args.passes, callback)

        def output_resulting_program(self, prog: ModuleOp) -> str:
            if self.args.target != "mlir":
                return super().output_resulting_program(prog)
            return self.print_module_text(prog)

        def prepare_output(self) -> IO[str]:
            # With -o, write to memory first: a failed run leaves no half-written file.
            if self.args.output_file is None:
                return sys.stdout
            self.captured = _KeptStringIO()
            return self.captured

        def run(self) -> None:
            super().run()
            if self.args.output_file is not None:
                from quantir.ir import write_atomically

                output = Path(self.args.output_file)
                output.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(output, self.captured.getvalue())

    return QuantirOptMain


class _KeptStringIO(StringIO):
    """A StringIO whose text survives `close()` (the xDSL driver closes its output)."""

    def close(self) -> None:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        with one_line_warnings("quantir-opt"):
            opt = _opt_main_class()(args=args)
            opt.run()
    except SystemExit:
        raise
    except BaseException as error:  # noqa: BLE001 - every failure becomes one line
        return fail("quantir-opt", error, wants_debug(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
