"""Runs the lit + FileCheck golden suite (tests/filecheck) as part of pytest."""

import subprocess
import sys
from pathlib import Path

SUITE = Path(__file__).parent / "filecheck"


def test_lit_suite() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from lit.main import main; main()", "-v", "--order=lexical", str(SUITE)],
        capture_output=True, text=True, check=False)
    report = result.stdout + result.stderr
    assert "Passed" in report, report  # the suite ran some tests
    assert result.returncode == 0, report
