"""One self-contained HTML page for a `dsdi rank` output folder: per-feature AP bar chart with the mAP line
(like the paper's Fig. 4, when qrels are given), thumbnails of the top clips per feature at the frame that
scored highest, and the run's facts and failures. No network: CSS inline, chart inline SVG, images base64."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.rank.output import RankedRun, RankOutput, RunFacts
from dsdi.trecvid.submission import Rankings, Topic
from dsdi.video.decode import VideoDecodeError, frame_at

CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1d2330; background: #fff; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ccd; }
h3 { font-size: 15px; margin: 18px 0 6px; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border: 1px solid #ccd; padding: 3px 8px; text-align: left; vertical-align: top; }
.strip { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; width: 164px; font-size: 12px; border: 2px solid #ccd; padding: 2px; }
figure.rel { border-color: #2a9d4b; } figure.nonrel { border-color: #c0392b; }
figure img { display: block; width: 160px; }
.noframe { width: 160px; height: 90px; background: #eee; display: flex; align-items: center;
  justify-content: center; text-align: center; color: #777; }
.tag { font-weight: bold; } .rel .tag { color: #2a9d4b; } .nonrel .tag { color: #c0392b; }
"""


def _evaluate(rankings: Rankings, qrels_path: Path) -> tuple[dict[Topic, float], float, dict[Topic, dict[str, int]],
                                                              str]:
    """(AP per topic, mean, qrels {topic: {shot: rel}}, measure name) with trecvid.evaluation at depth 1000: TREC AP on
    trec_eval qrels, xinfAP on NIST sample qrels (rel -1 = pooled, not judged); means over features with a relevant
    clip."""
    from dsdi.trecvid.evaluation import evaluate_judgments
    from dsdi.trecvid.qrels import read_judgments

    judgments = read_judgments(qrels_path)
    evaluation = evaluate_judgments(rankings, judgments)
    measure = "xinfAP" if judgments.sampled else "AP"
    return evaluation.by_feature(), evaluation.mean, judgments.relevance, measure


def ap_chart_svg(ap_by_feature: list[tuple[str, float]], mean_ap: float, width: int = 1100,
                 height: int = 460, measure: str = "AP") -> str:
    """Inline SVG bar chart: one bar per feature (``measure``, AP or xinfAP, in [0, 1]) and a dashed horizontal
    line at its mean."""
    left, right, top, bottom = 40, 80, 20, 230
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / max(len(ap_by_feature), 1)
    parts = [f'<svg width="{width}" height="{height}" '
             f'role="img" aria-label="average precision per feature">']
    for tick in np.linspace(0.0, 1.0, 6):
        y = top + plot_h * (1 - tick)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#dde"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{tick:.1f}</text>')
    for i, (feature, ap) in enumerate(ap_by_feature):
        x = left + i * step
        bar_h = plot_h * min(max(ap, 0.0), 1.0)
        label = html.escape(feature)
        parts.append(f'<rect x="{x + step * 0.15:.1f}" y="{top + plot_h - bar_h:.1f}" width="{step * 0.7:.1f}" '
                     f'height="{bar_h:.1f}" fill="#3b6ea8"><title>{label}: {measure} {ap:.3f}</title></rect>')
        cx, cy = x + step / 2, top + plot_h + 8
        parts.append(f'<text x="{cx:.1f}" y="{cy:.1f}" font-size="11" text-anchor="end" '
                     f'transform="rotate(-60 {cx:.1f} {cy:.1f})">{label}</text>')
    if math.isfinite(mean_ap):
        y = top + plot_h * (1 - mean_ap)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e07b00" '
                     f'stroke-width="2" stroke-dasharray="6 4"/><text x="{width - right + 4}" y="{y + 4:.1f}" '
                     f'font-size="12" fill="#e07b00">m{measure} {mean_ap:.3f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def thumbnail_jpeg(frame: np.ndarray, width: int = 160) -> bytes:
    """uint8 (H,W,3) RGB frame -> the bytes of a JPEG of it resized to `width` pixels wide."""
    image = Image.fromarray(frame)
    height = max(1, round(image.height * width / image.width))
    buffer = io.BytesIO()
    image.resize((width, height), Image.BILINEAR).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def thumbnail_data_uri(frame: np.ndarray, width: int = 160) -> str:
    """uint8 (H,W,3) RGB frame -> 'data:image/jpeg;base64,...' of ``thumbnail_jpeg``."""
    return "data:image/jpeg;base64," + base64.b64encode(thumbnail_jpeg(frame, width)).decode("ascii")


def _thumbnail_html(clip_path: Path, time_s: float, cache: dict) -> str:
    key = (clip_path, time_s)
    if key not in cache:
        try:
            cache[key] = f'<img alt="frame" src="{thumbnail_data_uri(frame_at(clip_path, time_s))}">'
        except (VideoDecodeError, InputError, OSError, IndexError) as error:
            cache[key] = f'<div class="noframe">no frame<br>{html.escape(str(error)[-80:])}</div>'
    return cache[key]


def _feature_section(feature: str, fnum: Topic, run: RankedRun, folder: Path, top_n: int,
                     qrels: dict[Topic, dict[str, int]] | None, score_text: str, cache: dict) -> str:
    title = f"{fnum}. {feature}" if isinstance(fnum, int) else feature
    heading = html.escape(title) + (f" &mdash; {score_text}" if score_text else "")
    figures = []
    for rank, (shot_id, run_score) in enumerate(run.rankings.get(fnum, [])[:top_n], start=1):
        known = shot_id in run.clip_scores.index
        score = float(run.clip_scores.at[shot_id, feature]) if known else run_score
        time_s = float(run.peak_times.at[shot_id, feature]) if shot_id in run.peak_times.index else math.nan
        if known and math.isfinite(time_s):
            clip_file = RankOutput(folder).clip_file(run.clip_scores.at[shot_id, "clip_path"], run.facts)
            picture = _thumbnail_html(clip_file, time_s, cache)
        else:
            picture = '<div class="noframe">no peak frame recorded</div>'
        css_class, tag = "", ""
        if qrels is not None:
            judged = qrels.get(fnum, {})
            relevant = judged.get(shot_id, 0) > 0
            css_class = "rel" if relevant else "nonrel"
            tag = "relevant" if relevant else ("not relevant" if judged.get(shot_id, -1) >= 0 else "not judged")
        at = f" @ {time_s:.1f} s" if math.isfinite(time_s) else ""
        figures.append(f'<figure class="{css_class}">{picture}<figcaption>#{rank} {html.escape(shot_id)}<br>'
                       f'score {score:.3f}{at}<br><span class="tag">{tag}</span></figcaption></figure>')
    body = "".join(figures) or "<p>no clips ranked</p>"
    return f'<section><h3>{heading}</h3><div class="strip">{body}</div></section>'


def _facts_table(facts: RunFacts, n_failures: int) -> str:
    """run.json's keys as it holds them (its schema version left out), then the failures.csv row count."""
    rows = []
    for key, value in facts.to_json().items():
        if key == "schema_version":
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        if key == "elapsed_s" and isinstance(value, (int, float)):
            text = f"{value:.1f} s"
        rows.append(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(text))}</td></tr>")
    rows.append(f"<tr><th>failures.csv rows</th><td>{n_failures}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _failures_table(failures: pd.DataFrame) -> str:
    if not len(failures):
        return "<p>No clip failed.</p>"
    cells = "".join(f"<tr><td>{html.escape(f.shot_id)}</td><td>{html.escape(f.clip_path)}</td>"
                    f"<td>{html.escape(f.reason)}</td></tr>" for f in failures.itertuples())
    return f"<table><tr><th>shot id</th><th>clip</th><th>reason</th></tr>{cells}</table>"


def build_report(out_dir: str | Path, qrels_path: str | Path | None = None, out_path: str | Path | None = None,
                 top_n: int = 6) -> Path:
    """Write the HTML report of a `dsdi rank` output folder; returns its path (default OUT_DIR/report.html)."""
    folder = Path(out_dir)
    run = RankOutput(folder).read()
    out_path = Path(out_path) if out_path else folder / "report.html"
    labelset = run.facts.label_set()
    numbers = labelset.topics()
    ap_by_fnum: dict[Topic, float] = {}
    qrels, measure = None, "AP"
    chart = ""
    if qrels_path is not None:
        if not Path(qrels_path).is_file():
            raise InputError(f"{qrels_path}: qrels file not found; pass a file of lines `fNum 0 shotId rel` "
                             "(or NIST sample qrels `fNum 0 shotId stratum judgment`)")
        ap_by_fnum, mean_ap, qrels, measure = _evaluate(run.rankings, Path(qrels_path))
        bars = [(f, ap_by_fnum[numbers[f]]) for f in labelset.features if numbers[f] in ap_by_fnum]
        title = "Average precision" if measure == "AP" else "Inferred AP (NIST sample qrels)"
        chart = (f"<h2>{title} per feature (m{measure} {mean_ap:.4f} over {len(bars)} features with a relevant clip)"
                 f"</h2>{ap_chart_svg(bars, mean_ap, measure=measure)}")
    cache: dict = {}
    score_texts = {fnum: f"{measure} {ap:.3f}" for fnum, ap in ap_by_fnum.items()}
    sections = "".join(_feature_section(f, numbers[f], run, folder, top_n, qrels, score_texts.get(numbers[f], ""),
                                        cache) for f in labelset.features)
    title = html.escape(f"dsdi report: {folder.name if run.facts.run_id is None else run.facts.run_id}")
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{CSS}</style></head><body><h1>{title}</h1>"
            f"<h2>Run</h2>{_facts_table(run.facts, len(run.failures))}{chart}"
            f"<h2>Top {top_n} clips per feature (frame that scored highest)</h2>{sections}"
            f"<h2>Failures</h2>{_failures_table(run.failures)}</body></html>")
    write_text_atomic(out_path, page)
    return out_path
