"""Ground truth files (qrels) in the two forms NIST publishes, told apart by their column count.

- trec_eval qrels (complete judgments), 4 columns: ``fNum 0 shotId rel``; rel > 0 = relevant, any integer. A shot
  not listed counts as not relevant. Scored with TREC AP (``dsdi.trecvid.evaluation``).
- NIST sample qrels (sampled judgments, what TRECVID publishes), 5 columns: ``fNum 0 shotId stratum judgment``;
  every pooled shot is listed with the integer number of the pool stratum it was drawn from and its judgment:
  1 relevant, 0 not relevant, -1 pooled but not sampled for judging. Scored with inferred AP
  (``dsdi.trecvid.inferred``, as NIST's sample_eval does).

The first column is the topic: a feature number, or a feature's class name for label sets without numbers
(``roads_any 0 shotId 1``; ``dsdi.trecvid.submission.parse_topic``). Blank lines and ``#`` comments are skipped.
The first judgment line fixes the form; a line of the other form, another column count, a non-integer field, a
sample judgment outside -1/0/1 or a shot listed twice for a feature raises one InputError naming the file and the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dsdi.errors import InputError
from dsdi.trecvid.submission import Topic, parse_int, parse_topic, read_text_lines

COMPLETE_FORMAT = "trec_eval qrels"
SAMPLE_FORMAT = "NIST sample qrels"
_COLUMNS = {4: (COMPLETE_FORMAT, "'fNum 0 shotId rel'"), 5: (SAMPLE_FORMAT, "'fNum 0 shotId stratum judgment'")}
SAMPLE_JUDGMENTS = (-1, 0, 1)


@dataclass(frozen=True)
class Judgments:
    """A qrels file read: ``relevance`` {topic: {shot_id: rel}} (sample qrels: the judgment -1/0/1) and, for
    sample qrels, ``strata`` {topic: {shot_id: stratum}} over the same shots (empty for trec_eval qrels)."""

    path: Path
    format: str
    relevance: dict[Topic, dict[str, int]]
    strata: dict[Topic, dict[str, int]]

    @property
    def sampled(self) -> bool:
        """True for NIST sample qrels (scored with inferred AP), False for complete trec_eval qrels."""
        return self.format == SAMPLE_FORMAT


def _columns_of(path: Path, line_no: int, fields: list[str], form: int | None) -> int:
    """The column count of a judgment line, checked against the form the file started with (None: first line)."""
    count = len(fields)
    line = " ".join(fields)
    if form is None and count not in _COLUMNS:
        raise InputError(f"{path}, line {line_no}: expected 4 columns {_COLUMNS[4][1]} ({_COLUMNS[4][0]}) or 5 "
                         f"{_COLUMNS[5][1]} ({_COLUMNS[5][0]}), found {count}: {line!r}")
    if form is not None and count not in _COLUMNS:
        raise InputError(f"{path}, line {line_no}: expected {form} columns {_COLUMNS[form][1]} ({_COLUMNS[form][0]}) "
                         f"like the earlier lines, found {count}: {line!r}")
    if form is not None and count != form:
        raise InputError(f"{path}, line {line_no}: mixed formats: {count} columns ({_COLUMNS[count][0]}) in a file "
                         f"whose earlier lines have {form} ({_COLUMNS[form][0]}); use one form per file")
    return count


def read_judgments(path: str | Path) -> Judgments:
    """Read trec_eval qrels or NIST sample qrels (detected from the column count; module docstring)."""
    path = Path(path)
    form: int | None = None
    relevance: dict[Topic, dict[str, int]] = {}
    strata: dict[Topic, dict[str, int]] = {}
    first_line: dict[tuple[Topic, str], int] = {}
    for line_no, line in enumerate(read_text_lines(path), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        form = _columns_of(path, line_no, fields, form)
        fnum = parse_topic(fields[0])
        shot_id = fields[2]
        judgment = parse_int(fields[-1], path, line_no, "judgment" if form == 5 else "relevance")
        if form == 5:
            strata.setdefault(fnum, {})[shot_id] = parse_int(fields[3], path, line_no, "stratum")
            if judgment not in SAMPLE_JUDGMENTS:
                raise InputError(f"{path}, line {line_no}: judgment {judgment} is not one of -1 (pooled, not "
                                 "judged), 0 (not relevant), 1 (relevant)")
        if (fnum, shot_id) in first_line:
            raise InputError(f"{path}, line {line_no}: shot {shot_id!r} is judged twice for feature {fnum} "
                             f"(first on line {first_line[fnum, shot_id]})")
        first_line[fnum, shot_id] = line_no
        relevance.setdefault(fnum, {})[shot_id] = judgment
    if form is None:
        raise InputError(f"{path}: no judgements found (expected lines 'fNum 0 shotId rel' or "
                         "'fNum 0 shotId stratum judgment')")
    return Judgments(path, _COLUMNS[form][0], relevance, strata)


def read_qrels(path: str | Path) -> dict[Topic, dict[str, int]]:
    """Read complete trec_eval qrels ``fNum 0 shotId rel`` -> {fNum: {shot_id: rel}} (rel > 0 = relevant).

    InputError for NIST sample qrels too: a caller of this function scores against complete judgments."""
    judgments = read_judgments(path)
    if judgments.sampled:
        raise InputError(f"{path}: is {SAMPLE_FORMAT} (5 columns); this needs complete judgments, "
                         "trec_eval qrels 'fNum 0 shotId rel'")
    return judgments.relevance
