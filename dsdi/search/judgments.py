"""The relevance judgments an analyst makes in ``dsdi serve``, kept as trec_eval qrels (``topic 0 shot_id rel``,
rel 1 = relevant, 0 = not relevant) so that ``dsdi eval --qrels`` and ``dsdi report --qrels`` read them as they are.

The topic is a feature number, a class name or a name the analyst gives a query (``flooded_roads``): any text of
letters, digits and ``_ . : + -``. One line per (topic, shot): judging a shot again replaces its line, clearing a
mark removes it. Every change re-reads the file, changes it and writes it whole (``dsdi.files``: it appears whole or
not at all) under one lock, so two tabs of one server judging at once lose nothing.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.trecvid.qrels import read_qrels
from dsdi.trecvid.submission import Topic, parse_topic, topic_order

JUDGMENTS_NAME = "judgments.qrels"
"""The judgments file's name in the rank output folder (``dsdi serve --out`` puts it elsewhere)."""
TOPIC_PATTERN = re.compile(r"[A-Za-z0-9_.:+-]{1,64}")
Judged = dict[Topic, dict[str, int]]


def checked_topic(text: str) -> Topic:
    """A topic as typed (a feature number, a class name or a query's name) -> int or str; InputError unless it is
    1-64 letters, digits or ``_ . : + -``."""
    if not isinstance(text, str) or not TOPIC_PATTERN.fullmatch(text):
        raise InputError(f"topic {str(text)[:80]!r}: name it with 1-64 letters, digits or _ . : + - "
                         "(e.g. flooded_roads)")
    return parse_topic(text)


class JudgmentFile:
    """A qrels file of judgments that one server changes from many threads (``path``: where it is written)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def read(self) -> Judged:
        """{topic: {shot_id: rel}} as the file holds them now ({} before the first judgment)."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return {}
        return read_qrels(self.path)

    def of_topic(self, topic: Topic) -> dict[str, int]:
        """{shot_id: rel} judged for ``topic``."""
        return dict(self.read().get(topic, {}))

    def judge(self, topic: Topic, shot_id: str, relevant: bool | None) -> dict[str, int]:
        """Mark ``shot_id`` relevant (True), not relevant (False) or not judged (None) for ``topic``, replacing its
        earlier mark; returns the topic's judgments after the change."""
        if not shot_id or shot_id.split() != [shot_id]:
            raise InputError(f"shot id {shot_id!r}: a judged shot id has no whitespace")
        with self._lock:
            judged = self.read()
            marks = judged.setdefault(topic, {})
            if relevant is None:
                marks.pop(shot_id, None)
            else:
                marks[shot_id] = int(relevant)
            self._write(judged)
            return dict(marks)

    def _write(self, judged: Judged) -> None:
        lines = [f"{topic} 0 {shot_id} {rel}\n" for topic in sorted(judged, key=topic_order)
                 for shot_id, rel in sorted(judged[topic].items())]
        write_text_atomic(self.path, "".join(lines))
