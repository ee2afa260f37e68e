"""Progress display shared by every long-running command: items done, rate, ETA (rich, on stderr)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

stderr_console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second, e.g. ``152.3 frames/s``."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("  ?   " + self.unit + "/s" if speed is None else f"{speed:7.1f} {self.unit}/s", style="cyan")


def progress_bar(unit: str = "items", console: Console | None = None) -> Progress:
    """A rich Progress showing ``done/total``, ``<rate> <unit>/s``, elapsed and ETA, plus a free ``info`` field.

    Usage::

        with progress_bar("clips") as bar:
            task = bar.add_task("rank", total=n, info="")
            bar.update(task, advance=1, info="loss 0.31")
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console or stderr_console,
    )
