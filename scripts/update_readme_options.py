"""Rewrite the README's option tables from the config dataclasses (the single source of the flags).

    python scripts/update_readme_options.py      # run after adding or changing a TrainConfig / RankConfig field

Each table sits between ``<!-- options: NAME -->`` and ``<!-- /options -->``; tests/test_options.py fails when a
table differs from what this script writes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from dsdi.options import option_table
from dsdi.rank.config import RankConfig
from dsdi.train.config import TrainConfig

README = Path(__file__).resolve().parents[1] / "README.md"
TABLES = {"train": TrainConfig, "rank": RankConfig}


def with_tables(text: str) -> str:
    """``text`` with every option block replaced by the table generated from its config dataclass."""
    for name, config_cls in TABLES.items():
        pattern = re.compile(rf"(<!-- options: {name} -->\n).*?(<!-- /options -->)", re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"{README}: no '<!-- options: {name} -->' ... '<!-- /options -->' block")
        text = pattern.sub(lambda match, cls=config_cls: match[1] + option_table(cls) + "\n" + match[2], text)
    return text


if __name__ == "__main__":
    updated = with_tables(README.read_text(encoding="utf-8"))
    README.write_text(updated, encoding="utf-8")
    sys.stdout.write(f"{README}: option tables of {', '.join(TABLES)} written\n")
