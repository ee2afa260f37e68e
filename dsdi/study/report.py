"""The study's report: ``docs/study.md`` (a summary table, then each claim's table, verdict and notes) and one figure
next to it (``study.svg``: every comparison's mean difference and 95% paired-bootstrap interval, by claim).
The SVG is written by hand (no plotting library): one row per comparison, a zero line, the interval as a bar."""

from __future__ import annotations

import math
import subprocess
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from dsdi.files import write_text_atomic
from dsdi.study.claims import Claim, Row, measure_claims
from dsdi.study.design import VARIANTS, WORLDS, StudySize, run_dir
from dsdi.study.stats import (
    BOOTSTRAP_RESAMPLES,
    INCONCLUSIVE,
    MEANINGFUL_GAIN,
    NOT_REPRODUCED,
    REPRODUCED,
    verdict_text,
)
from dsdi.train.run_folder import RunFolder, read_metrics

VERDICT_COLOURS = {REPRODUCED: "#1a7f37", NOT_REPRODUCED: "#cf222e"}
INCONCLUSIVE_COLOUR = "#6e7781"


def _number(value: float, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _row_cells(row: Row) -> list[str]:
    d = row.diff
    seeds = " ".join(_number(v, signed=True) for v in d.per_seed)
    return [row.comparison, row.measure, _number(row.a), _number(row.b), f"**{_number(d.mean, signed=True)}**",
            d.over_features.text(), d.over_seeds.text(), seeds, str(d.features), verdict_text(d)]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def headline_text(claim: Claim) -> str:
    row = claim.rows[claim.headline]
    d = row.diff
    agree = sum(v > 0 for v in d.per_seed)
    return (f"{row.comparison}, {row.measure}: {_number(d.mean, signed=True)} (95% CI over features "
            f"{d.over_features.text()}, over seeds {d.over_seeds.text()}; A ahead in {agree}/{len(d.per_seed)} seeds)")


def claim_section(claim: Claim) -> str:
    header = ["A − B", "measure", "A", "B", "Δ", "95% CI, features", "95% CI, seeds", "Δ per seed", "features",
              "verdict"]
    parts = [f"## {claim.number}. {claim.title}", f"*Claim:* {claim.claim}",
             f"**Verdict: {claim.verdict}** — {headline_text(claim)}.",
             _table(header, [_row_cells(row) for row in claim.rows])]
    if claim.notes:
        parts.append("\n".join(f"- {note}" for note in claim.notes))
    return "\n\n".join(parts)


def figure_svg(claims: list[Claim]) -> str:
    """Forest plot: one line per comparison (grouped by claim), mean Δ as a dot, the features interval as a bar."""
    rows = [(claim, row) for claim in claims for row in claim.rows]
    ends = [v for _, row in rows for v in (row.diff.over_features.low, row.diff.over_features.high)
            if math.isfinite(v)]
    span = max([0.02, *map(abs, ends)]) * 1.1
    label_w, plot_w, line_h, top = 430, 360, 17, 50
    height = top + line_h * (len(rows) + len(claims)) + 30

    def x(value: float) -> float:
        return label_w + plot_w * (value + span) / (2 * span)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 20}" height="{height}" '
           'font-family="sans-serif" font-size="11">', '<rect width="100%" height="100%" fill="white"/>',
           '<text x="10" y="18" font-size="13" font-weight="bold">Δ mAP (A − B), mean over seeds, 95% paired '
           'bootstrap over features</text>',
           *[f'<text x="{label_w + 120 * k}" y="{top - 14}" fill="{colour}">● {verdict}</text>' for k, (verdict, colour)
             in enumerate([*VERDICT_COLOURS.items(), (INCONCLUSIVE, INCONCLUSIVE_COLOUR)])],
           f'<line x1="{x(0):.1f}" y1="{top - 8}" x2="{x(0):.1f}" y2="{height - 25}" stroke="#888"/>']
    for tick in (-span / 1.1, -span / 2.2, span / 2.2, span / 1.1):
        out.append(f'<text x="{x(tick):.1f}" y="{height - 10}" text-anchor="middle" fill="#555">{tick:+.3f}</text>')
    y, last = top, None
    for claim, row in rows:
        if claim is not last:
            out.append(f'<text x="10" y="{y + 4}" font-weight="bold">{claim.number}. {escape(claim.title)}</text>')
            y, last = y + line_h, claim
        colour = VERDICT_COLOURS.get(row.diff.verdict, INCONCLUSIVE_COLOUR)
        out.append(f'<text x="22" y="{y + 4}">{escape(row.comparison)}; {escape(row.measure)}</text>')
        low, high = row.diff.over_features.low, row.diff.over_features.high
        if math.isfinite(low) and math.isfinite(row.diff.mean):
            out.append(f'<line x1="{x(low):.1f}" y1="{y}" x2="{x(high):.1f}" y2="{y}" stroke="{colour}" '
                       'stroke-width="3"/>')
            out.append(f'<circle cx="{x(row.diff.mean):.1f}" cy="{y}" r="3.5" fill="{colour}"/>')
        y += line_h
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _training_seconds(root: Path, size: StudySize) -> float:
    """Training time of every run, from the seconds column of their metrics.csv."""
    return sum(read_metrics(RunFolder(run_dir(root, v.name, seed)).metrics_csv).train_seconds
               for v in VARIANTS for seed in size.seeds)


def _commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                              cwd=Path(__file__).parent)
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def _method(size: StudySize, root: Path) -> str:
    worlds = "; ".join(f"`{w.name}` (miss {w.miss_rate}, false {w.false_rate}, outliers {w.outlier_rate:.0%}"
                       f"{', clips' if w.with_clips else ''})" for w in WORLDS)
    return "\n".join([
        "## Method",
        f"- Worlds (`dsdi synth`, seed {size.world_seed}, {size.images} images at {size.image_size[0]}x"
        f"{size.image_size[1]}; the same normal images in each): {worlds}. The default world has {size.clips} "
        f"clips ({size.clip_size[0]}x{size.clip_size[1]}, {size.clip_seconds[0]:g}-{size.clip_seconds[1]:g} s) "
        "that every model ranks.",
        f"- Training: {len(VARIANTS)} variants x seeds {', '.join(map(str, size.seeds))} ({size.backbone}, random "
        f"init, {size.img_size} px, AdamW lr 3e-3, {size.epochs} epochs, cosine, batch {size.batch_size}); the seed "
        f"sets the init, augmentation and train/validation split; a common {size.holdout_fraction:.0%} hold-out "
        "per world is never trained on. Recipes: `recipes/*.toml` in the study folder. Training took "
        f"{_training_seconds(root, size) / 60:.0f} min of the run (sum of metrics.csv seconds).",
        "- **Image mAP**: the best checkpoint's sigmoids on the hold-out images (outliers excluded) against the "
        "**true** labels; AP per feature over the 32 features with a positive. **Clip mAP**: TREC AP per feature "
        "of the default world's clips (max over 10 fps frames unless stated) against its qrels.",
        "- **Δ** is A − B per seed and feature, averaged. *95% CI, features*: paired bootstrap over features of "
        f"the seed-averaged Δ ({BOOTSTRAP_RESAMPLES:,} resamples). *95% CI, seeds*: Student t over the per-seed "
        f"mean Δ (wide with {len(size.seeds)} seeds). *features*: features with an AP in both.",
        f"- **Verdict** of a comparison: *reproduced* when the features interval lies above 0 and A is ahead in "
        f"every seed; *not reproduced* when the interval lies below +{MEANINGFUL_GAIN} (no gain of a mAP point "
        "or more); otherwise *inconclusive at this size*. A claim's verdict is its headline comparison's (the "
        "first line under it); *(B better)* marks an interval wholly below 0.",
        f"- **Scope.** Small models trained from scratch for {size.epochs} epochs at {size.img_size} px on about "
        f"{round(size.images * (1 - size.holdout_fraction)):,} synthetic images per run; the paper fine-tuned "
        "ImageNet-pretrained ResNeSt, IBN-Net and HRNet for up to 40 epochs at 360 px on about 40,000 LADI images. "
        "A verdict here says what holds in this regime, not what holds at the paper's.",
    ])


def write_report(root: Path, size: StudySize, path: Path) -> Path:
    """Measure every claim and write the report (and its figure, ``<path stem>.svg``); returns ``path``."""
    claims = measure_claims(root, size)
    figure = path.with_suffix(".svg")
    summary = _table(["claim", "verdict", "headline comparison"],
                     [[f"{c.number}. {c.title}", f"**{c.verdict}**", headline_text(c)] for c in claims])
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n\n".join([
        "# Do the paper's techniques work? The claims study",
        f"Written by `make study` (`dsdi study {root}`) at commit {_commit()}, {stamp}. Every number below is "
        "measured on dsdi's synthetic world, where the true labels are known; rerun `make study` to reproduce it.",
        summary, f"![Every comparison's Δ and 95% interval]({figure.name})", _method(size, root),
        *[claim_section(claim) for claim in claims],
    ]) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(figure, figure_svg(claims))
    write_text_atomic(path, text)
    return path
