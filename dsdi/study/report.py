"""The study's report: ``docs/study.md`` (the pre-registered headlines and their verdicts, the world and its crowd
beside the paper's figures, the method, then each claim's table and notes) and one figure next to it (``study.svg``:
every comparison's mean difference and two-level bootstrap interval, by claim). The SVG is written by hand (no
plotting library): one row per comparison, a zero line and the equivalence margin, the interval as a bar."""

from __future__ import annotations

import math
import subprocess
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from dsdi.files import write_text_atomic
from dsdi.report.tables import markdown_table
from dsdi.study.claims import Claim, Row, measure_claims
from dsdi.study.design import HEADLINES, PAPER_POOL, StudySize, members, recipes
from dsdi.study.heads import BATCH, DROPOUT, HIDDEN, LR, TRAIN_SHARE, WEIGHT_DECAY
from dsdi.study.measure import Measurements
from dsdi.study.stats import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    EQUIVALENCE_MARGIN,
    EQUIVALENT,
    INCONCLUSIVE,
    REPRODUCED,
    REVERSED,
)
from dsdi.study.world_report import world_section

VERDICT_COLOURS = {REPRODUCED: "#1a7f37", REVERSED: "#cf222e", EQUIVALENT: "#0969da", INCONCLUSIVE: "#6e7781"}
DESCRIPTIVE_COLOUR = "#8c959f"


def _number(value: float, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _p(value: float) -> str:
    return f"{value:.3f}" if value >= 0.001 else "<0.001"


def _ahead(row: Row) -> str:
    deltas = row.result.per_seed
    return f"{sum(d > 0 for d in deltas)}/{len(deltas)}"


def _row_cells(row: Row) -> list[str]:
    r = row.result
    verdict = f"**{row.judged.verdict}**" if row.judged else "(descriptive)"
    return [row.comparison, row.measure, _number(row.a), _number(row.b), f"**{_number(r.mean, signed=True)}**",
            r.interval.text(), _ahead(row), _p(r.p_difference), _p(r.p_equivalence), verdict]


def headline_text(row: Row) -> str:
    r, j = row.result, row.judged
    return (f"{row.comparison}, {row.measure}: {_number(r.mean, signed=True)} (95% CI {r.interval.text()}; A ahead in "
            f"{_ahead(row)} seeds; Holm p {_p(j.p_difference_adjusted)}, equivalence p {_p(j.p_equivalence_adjusted)})")


def summary_table(claims: list[Claim]) -> str:
    header = ["claim", "in the paper", "headline comparison", "measure", "Δ", "95% CI", "A ahead", "p (Holm)",
              "p equiv. (Holm)", "verdict"]
    rows = []
    for claim in claims:
        row = claim.headline
        r, j = row.result, row.judged
        rows.append([f"{claim.number}. {claim.title}", "yes" if claim.in_paper else "no, beyond", row.comparison,
                     row.measure, f"**{_number(r.mean, signed=True)}**", r.interval.text(), _ahead(row),
                     _p(j.p_difference_adjusted), _p(j.p_equivalence_adjusted), f"**{j.verdict}**"])
    return markdown_table(header, rows).rstrip()


def claim_section(claim: Claim) -> str:
    header = ["A − B", "measure", "A", "B", "Δ", "95% CI", "A ahead", "p", "p equiv.", "verdict"]
    parts = [f"## {claim.number}. {claim.title}" + ("" if claim.in_paper else " — beyond the paper"),
             f"*Claim:* {claim.claim}",
             f"**Verdict: {claim.headline.judged.verdict}** — {headline_text(claim.headline)}.",
             markdown_table(header, [_row_cells(row) for row in claim.rows]).rstrip()]
    if claim.notes:
        parts.append("\n".join(f"- {note}" for note in claim.notes))
    return "\n\n".join(parts)


def figure_svg(claims: list[Claim]) -> str:
    """Forest plot: one line per comparison (grouped by claim), the mean Δ as a dot, its 95% interval as a bar, the
    ±margin band shaded; headline rows coloured by verdict, descriptive rows grey."""
    rows = [(claim, row) for claim in claims for row in claim.rows]
    ends = [v for _, row in rows for v in (row.result.interval.low, row.result.interval.high) if math.isfinite(v)]
    span = max([0.03, *map(abs, ends)]) * 1.1
    label_w, plot_w, line_h, top = 470, 360, 17, 50
    height = top + line_h * (len(rows) + len(claims)) + 30

    def x(value: float) -> float:
        return label_w + plot_w * (value + span) / (2 * span)

    legend = [*VERDICT_COLOURS.items(), ("descriptive", DESCRIPTIVE_COLOUR)]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 20}" height="{height}" '
           'font-family="sans-serif" font-size="11">', '<rect width="100%" height="100%" fill="white"/>',
           '<text x="10" y="18" font-size="13" font-weight="bold">Δ mAP (A − B), mean over seeds, 95% two-level '
           'bootstrap (seeds × test items); band: ±equivalence margin</text>',
           *[f'<text x="{label_w - 60 + 85 * k}" y="{top - 14}" fill="{colour}">● {name}</text>'
             for k, (name, colour) in enumerate(legend)],
           f'<rect x="{x(-EQUIVALENCE_MARGIN):.1f}" y="{top - 8}" height="{height - top - 17}" '
           f'width="{x(EQUIVALENCE_MARGIN) - x(-EQUIVALENCE_MARGIN):.1f}" fill="#ddf4ff"/>',
           f'<line x1="{x(0):.1f}" y1="{top - 8}" x2="{x(0):.1f}" y2="{height - 25}" stroke="#888"/>']
    for tick in (-span / 1.1, -span / 2.2, span / 2.2, span / 1.1):
        out.append(f'<text x="{x(tick):.1f}" y="{height - 10}" text-anchor="middle" fill="#555">{tick:+.3f}</text>')
    y, last = top, None
    for claim, row in rows:
        if claim is not last:
            out.append(f'<text x="10" y="{y + 4}" font-weight="bold">{claim.number}. {escape(claim.title)}</text>')
            y, last = y + line_h, claim
        colour = VERDICT_COLOURS[row.judged.verdict] if row.judged else DESCRIPTIVE_COLOUR
        weight = ' font-weight="bold"' if row.judged else ""
        out.append(f'<text x="22" y="{y + 4}"{weight}>{escape(row.comparison)}; {escape(row.measure)}</text>')
        low, high, mean = row.result.interval.low, row.result.interval.high, row.result.mean
        out.append(f'<line x1="{x(low):.1f}" y1="{y}" x2="{x(high):.1f}" y2="{y}" stroke="{colour}" stroke-width="3"/>')
        out.append(f'<circle cx="{x(mean):.1f}" cy="{y}" r="3.5" fill="{colour}"/>')
        y += line_h
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                              cwd=Path(__file__).parent)
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def _method(size: StudySize) -> str:
    seeds = f"{size.seeds[0]}-{size.seeds[-1]}" if list(size.seeds) == list(range(size.seeds[0], size.seeds[-1] + 1)) \
        else ", ".join(map(str, size.seeds))
    names = ", ".join(f"`{name}`" for name in recipes(size))
    return "\n".join([
        "## Method",
        f"- **Trunk.** `{size.backbone}` trained once by `dsdi train` ({size.trunk_epochs} epochs, {size.img_size} px, "
        f"BCE on true labels) on its own synthetic world of {size.trunk_images:,} images (independent features, "
        "another seed), then frozen and reused by every run. Its pooled features are cached for every image: the "
        f"plain view and {size.views - 1} views augmented as `dsdi train` augments (flips, rotation, colour "
        "jitter), the 2 x 2 tiles of each training image, and every clip frame's whole view and tiles, mirrored.",
        f"- **Models.** Each model is a head (Linear {HIDDEN} - ReLU - Dropout {DROPOUT} - Linear 37) on those "
        f"features, trained with dsdi's losses and cosine schedule (AdamW lr {LR:g}, weight decay {WEIGHT_DECAY:g}, "
        f"batch {BATCH}, {size.head_epochs} epochs; an augmented view per image per epoch). Member *m* of seed *s* "
        f"trains on its own {TRAIN_SHARE:.0%} split of the training images; the seed sets the initialisation, batch "
        f"order and views. Recipes: {names}. Each seed trains {len(members(size))} members.",
        f"- **Seeds**: {seeds} ({len(size.seeds)}). **Image mAP**: sigmoids on the {size.holdout_images:,} hold-out "
        "images against their **true** labels, AP per feature over the 32 features (every feature has at least "
        f"{size.holdout_min_positives} positives there). **Clip mAP**: AP per feature over the full ranking of the "
        f"world's {size.clips} clips (max over 10 fps frames unless stated) against the qrels.",
        "- **Statistics** (`dsdi/study/stats.py`, fixed before the run): the unit is the seed. Δ is the mean over "
        "seeds of mAP(A) − mAP(B). *95% CI*: two-level percentile bootstrap, seeds and test items (images or clips) "
        f"resampled together, the same item resample for A and B ({BOOTSTRAP_RESAMPLES:,} draws). *p*: exact paired "
        f"sign-flip test over seeds (two-sided); *p equiv.*: TOST with the same test against ±{EQUIVALENCE_MARGIN} "
        "mAP. Headlines only (one per claim, pre-registered in `dsdi/study/design.py`): Holm over the "
        f"{len(HEADLINES)} difference p's and, separately, the {len(HEADLINES)} equivalence p's; verdict at α = "
        f"{ALPHA}: *equivalent* when p equiv. < α (checked first), else *reproduced* / *reversed* when p < α with Δ "
        "above / below 0, else *inconclusive*. The four regions do not overlap. Other rows are descriptive.",
        f"- **Ensembles.** *Trio*: three baseline members on three splits. *Paper ensemble*: {len(PAPER_POOL)} members "
        "of different recipes on their own splits, equal weights (" + ", ".join(n for n, _ in PAPER_POOL) + "). "
        "Selection picks on the even rows of the hold-out with true labels over the 32 features and is judged on "
        "the odd rows.",
        "- **Scope.** Heads on a frozen trunk pretrained on synthetic images, 96 px, thousands of images; the paper "
        "fine-tuned whole ImageNet-pretrained ResNeSt, IBN-Net and HRNet networks for 40 epochs at 360 px on about "
        "40,000 LADI images. A verdict here says what holds in this regime, not what holds at the paper's.",
    ])


def write_report(root: Path, size: StudySize, path: Path, measurements: Measurements) -> Path:
    """Measure every claim and write the report (and its figure, ``<path stem>.svg``); returns ``path``."""
    claims = measure_claims(measurements)
    figure = path.with_suffix(".svg")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n\n".join([
        "# Do the paper's techniques work? The claims study",
        f"Written by `make study` (`dsdi study --out {root}`) at commit {_commit()}, {stamp}. Every number below is "
        "measured on dsdi's synthetic world, where the true labels are known; rerun `make study` to reproduce it, "
        "`make study SEEDS=10-19` to replicate it with other seeds.",
        summary_table(claims), f"![Every comparison's Δ and 95% interval]({figure.name})",
        world_section(root / "world"), _method(size), *[claim_section(claim) for claim in claims],
    ]) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(figure, figure_svg(claims))
    write_text_atomic(path, text)
    return path
