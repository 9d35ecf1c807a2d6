"""What both command-line tools share: one-line errors and argument parsing helpers."""

from __future__ import annotations

import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from quantir.errors import LegalityError, QuantirError


def wants_debug(argv: Sequence[str]) -> bool:
    return "--debug" in argv


def fail(tool: str, error: BaseException, debug: bool) -> int:
    """Report an error on one line (a traceback only with --debug); the exit code."""
    if isinstance(error, KeyboardInterrupt):
        print(f"{tool}: interrupted", file=sys.stderr)
        return 130
    if debug:
        traceback.print_exception(error)
    if isinstance(error, LegalityError):
        # One line for the summary, then one per diagnostic (each names op, rule, fix).
        for line in (error.summary, *error.diagnostics):
            print(f"{tool}: error: {line}", file=sys.stderr)
        return 1
    message = _one_line(error)
    if not isinstance(error, QuantirError | OSError) and not _is_user_ir_error(error):
        message = f"internal error: {message} (please report it; --debug shows the traceback)"
    print(f"{tool}: error: {message}", file=sys.stderr)
    return 1


def _is_user_ir_error(error: BaseException) -> bool:
    """xDSL parse and verify errors come from the user's input text."""
    from xdsl.utils.exceptions import DiagnosticException, ParseError, VerifyException

    return isinstance(error, ParseError | VerifyException | DiagnosticException)


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename:
        return f"{error.filename}: {error.strerror}"
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    from xdsl.utils.exceptions import ParseError

    if isinstance(error, ParseError) and len(lines) >= 3:
        # xDSL: "<file>:<line>:<col>", the source line, a caret line, then the message.
        return f"{lines[0]}: {lines[-1]}"
    return "; ".join(lines) if len(lines) <= 3 else f"{lines[0]} ... {lines[-1]}"


def parse_shape_args(items: Sequence[str]) -> dict[str, list[int]]:
    """`NAME=D0,D1,...` strings -> {name: [d0, d1, ...]}."""
    shapes: dict[str, list[int]] = {}
    for item in items:
        name, sep, dims = item.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = [int(d) for d in dims.replace("x", ",").split(",")]
        except ValueError:
            raise QuantirError(f"--input-shape '{item}': expected NAME=D0,D1,... "
                               "(for example input=1,3,224,224)") from None
    return shapes


@contextmanager
def one_line_warnings(tool: str) -> Iterator[None]:
    """Show warnings as `tool: warning: message` lines (no source line)."""

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        print(f"{tool}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        warnings.simplefilter("default")
        yield
