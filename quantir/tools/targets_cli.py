"""The `quantir targets` command and the `--target` options of `quantir quantize`.

    quantir targets                    lists the targets quantir ships
    quantir targets show hailo8        prints one target's rules with their sources
    quantir quantize ... --target hailo8 [--legalize] [--report FILE.json]
        checks legality (after legalizing) before anything is written
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from quantir.targets import DEFAULT_TARGET, Target, available_targets, load_target

WEIGHTED_KINDS = frozenset({"conv", "depthwise_conv", "conv_transpose", "gemm", "matmul", "*"})
"""Kinds whose rules' weight granularity and bias widths matter (shown by `show`)."""


def add_targets_command(commands: Any) -> None:
    """Register `quantir targets [show NAME]` on the CLI's subparsers."""
    targets = commands.add_parser(
        "targets", help="list the hardware targets, or show one's rules",
        description="Targets are data (quantir/targets/*.toml). The vendor ones are models "
                    "of public documentation, not vendor tools; `show` prints each rule with "
                    "the source it cites.")
    targets.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    actions = targets.add_subparsers(dest="targets_action", metavar="ACTION")
    show = actions.add_parser("show", help="print a target's rules")
    show.add_argument("name", help="a target name or a .toml file")
    show.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    targets.set_defaults(handler=command_targets)


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--target`, `--legalize` and `--report` options of `quantir quantize`."""
    parser.add_argument("--target", default=DEFAULT_TARGET,
                        help=f"hardware target the result must run on (default "
                             f"{DEFAULT_TARGET}; `quantir targets` lists them) or a .toml file")
    parser.add_argument("--legalize", action="store_true",
                        help="repair what the target cannot run (each change is printed)")
    parser.add_argument("--report", metavar="FILE.json",
                        help="write the legality diagnostics (and changes) as JSON")


def command_targets(args: argparse.Namespace) -> None:
    if args.targets_action == "show":
        print(describe_target(load_target(args.name)))
        return
    targets = [load_target(name) for name in available_targets()]
    width = max(len(t.name) for t in targets)
    for target in targets:
        print(f"{target.name.ljust(width)}  {target.description}")
    print(f"(`quantir targets show NAME` prints the rules; default target: {DEFAULT_TARGET})")


def describe_target(target: Target) -> str:
    """A target's rules as text, each with its file:line and the source it cites."""
    lines = [f"{target.name}: {target.description}", f"file: {target.path}"]

    def rule(text: str, line: int, note: str = "") -> None:
        lines.append(f"  {text}  [{target.where(line)}]")
        if note:
            lines.extend(textwrap.wrap(note, 96, initial_indent="      ",
                                       subsequent_indent="      "))

    lines.append("numerics:")
    rule(f"rounding: {', '.join(target.rounding)}", target.lines.get("rounding", 1))
    rule(f"activation signedness: {target.activation_signedness}",
         target.lines.get("activation_signedness", 1))
    fallback = target.fallback
    lines.append("float fallback:")
    if fallback.where == "none":
        rule("none: every op runs as an integer op", fallback.line, fallback.note)
    else:
        rule(f"on {fallback.where}: {', '.join(fallback.kinds)}", fallback.line, fallback.note)
    lines.append("conversions (precision_change / requant between widths):")
    if not target.conversions:
        lines.append("  none")
    for conversion in target.conversions:
        rule(str(conversion), conversion.line, conversion.note)
    lines.append("ops (mode a<input>_w<weights or second input>[_a<output>]):")
    for op in target.ops:
        text = f"{', '.join(op.kinds)}: {op.modes_text()}"
        if set(op.kinds) & WEIGHTED_KINDS:
            weights = "per-channel or per-tensor" if op.per_channel else "per-tensor"
            text += f"; {weights} weights; {'/'.join(map(str, op.bias_bits))}-bit bias"
        rule(text, op.line, op.note)
    lines.append("op kinds no rule names have no integer form here"
                 + ("" if fallback.where == "none" else f" (they may run in float on "
                                                        f"{fallback.where})"))
    return "\n".join(lines)


def target_rounding(target: Any, requested: str | None) -> str:
    """`requested`, else `single` when the target has it, else its first mode."""
    return requested or ("single" if "single" in target.rounding else target.rounding[0])


def apply_target(module: Any, config: Any, args: argparse.Namespace) -> str:
    """Check (after `--legalize`, repair) the annotated module for `--target`; raise
    LegalityError, before anything is written, when it cannot run there. Prints each
    legalize change and the verdict; writes `--report`. Returns the requant rounding
    for the integer program: `--rounding`, else `single` when the target has it, else
    the target's first mode."""
    from quantir.errors import LegalityError
    from quantir.passes.legality import check, write_report
    from quantir.passes.legalize import legalize, legalize_summary

    target = load_target(args.target)
    rounding = target_rounding(target, getattr(args, "rounding", None))
    if rounding not in target.rounding:
        raise LegalityError(
            f"{target.name}: --rounding {rounding} is not a rounding mode of the target",
            (f"{target.name} rounds {', '.join(target.rounding)} "
             f"({target.where(target.lines.get('rounding', 1))}); fix: pass --rounding "
             f"{target.rounding[0]} or leave --rounding out",))
    if args.legalize:
        report, lines = legalize(module, target, config)
        for change in report.changes:
            print(f"legalize: {change.message()}")
        if args.report:
            write_report(args.report, report)
        if not report.legal:
            raise LegalityError(legalize_summary(report), tuple(lines))
    else:
        report = check(module, target, config)
        if args.report:
            write_report(args.report, report)
        if not report.legal:
            raise report.error()
    print(report.summary())
    return rounding


def check_program(program: Any, args: argparse.Namespace) -> None:
    """The integer program (IR level 3) must run on `--target` as the annotated module
    did; raise LegalityError, before anything is written, when the lowering made
    something the target cannot run."""
    from quantir.passes.legality import check, plural

    target = load_target(args.target)
    report = check(program, target)
    if not report.legal:
        counts = ", ".join(f"{count} {kind}" for kind, count in report.counts().items())
        raise report.error(f"{target.name}: the integer program has "
                           f"{plural(len(report.diagnostics), 'op')} the target cannot run "
                           f"({counts}) though the annotated module is legal; the lowering "
                           "made them (see below): please report it")


__all__ = ["add_target_arguments", "add_targets_command", "apply_target", "check_program",
           "command_targets", "describe_target", "target_rounding"]
