"""Calling the real `dsdi` command in tests: typer's CliRunner on dsdi.cli.app.app, with the exit code checked."""

from typer.testing import CliRunner

from dsdi.cli.app import app


def invoke(args: list, expect: int = 0):
    """Run `dsdi ARGS` (any str()-able items); fail with the output unless it exits with ``expect``."""
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert result.exit_code == expect, f"{args[0]}: exit {result.exit_code}:\n{result.output}\n{result.exception!r}"
    return result


def said(result) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())
