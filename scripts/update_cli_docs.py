"""Write docs/cli.md, the option reference of every dsdi command, from the option declarations.

    python scripts/update_cli_docs.py      # run after adding or changing an option (a config dataclass field)

tests/test_options.py fails when docs/cli.md differs from what this script writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this tree's dsdi, also where another checkout is the installed one

from dsdi.cli.app import app  # noqa: E402
from dsdi.cli.reference import cli_reference  # noqa: E402

CLI_DOCS = REPO / "docs" / "cli.md"

if __name__ == "__main__":
    CLI_DOCS.write_text(cli_reference(app), encoding="utf-8")
    sys.stdout.write(f"{CLI_DOCS}: written\n")
