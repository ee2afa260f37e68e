"""dsdi report on a real `dsdi rank`-style folder: H.264 clips made by the ffmpeg CLI whose frames have known
colours, contract CSV/JSON/TREC files, AP checked against pytrec_eval, and the page rendered in headless
Chromium (selenium and chromedriver)."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from colour_clips import make_colour_clip
from lxml import html as lxml_html
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService

from dsdi.labels.labelset import LADI_V1
from dsdi.labels.schema import CLASSES, FEATURES
from dsdi.report.html import build_report

# Each clip shows its first colour for 1 s, then its second colour for 1 s (10 fps).
CLIP_COLOURS = {
    "Shot1_001": ((255, 0, 0), (0, 0, 255)),
    "Shot1_002": ((0, 255, 0), (255, 255, 0)),
    "Shot2_001": ((255, 0, 255), (0, 255, 255)),
    "Shot2_002": ((255, 255, 255), (0, 0, 0)),
}
FAILED_SHOT = "Shot9_<&>"
FAILED_REASON = "<script>alert('x')</script> moov atom not found"


def _make_clip(ffmpeg_exe: str, path: Path, first: tuple[int, int, int], second: tuple[int, int, int]) -> None:
    segments = [("0x{:02x}{:02x}{:02x}".format(*rgb), 1.0) for rgb in (first, second)]
    make_colour_clip(ffmpeg_exe, path, segments, (160, 120), rate=10, gop=None)


@pytest.fixture(scope="module")
def rank_folder(tmp_path_factory, ffmpeg_exe) -> dict:
    """A folder written per the rank OUT_DIR contract, plus the truth the test knows about it."""
    root = tmp_path_factory.mktemp("rank")
    clips_dir = root / "clips"
    clips_dir.mkdir()
    out = root / "out"
    out.mkdir()
    rng = np.random.default_rng(7)
    shots = list(CLIP_COLOURS)
    scores = {shot: rng.permutation(len(CLASSES)) / 40 + 0.01 * i for i, shot in enumerate(shots)}
    peaks = {shot: {f: float(rng.choice([0.45, 1.55])) for f in FEATURES} for shot in shots}
    with (out / "clip_scores.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["shot_id", "clip_path", "frames", "status", *CLASSES])
        for shot in shots:
            _make_clip(ffmpeg_exe, clips_dir / f"{shot}.mp4", *CLIP_COLOURS[shot])
            writer.writerow([shot, str(clips_dir / f"{shot}.mp4"), 20, "ok", *[f"{s:.6f}" for s in scores[shot]]])
        writer.writerow([FAILED_SHOT, str(clips_dir / "broken.mp4"), 0, "failed", *[""] * len(CLASSES)])
    with (out / "peak_frames.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["shot_id", *FEATURES])
        for shot in shots:
            writer.writerow([shot, *[peaks[shot][f] for f in FEATURES]])
    with (out / "failures.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["clip_path", "shot_id", "reason"],
                                      [str(clips_dir / "broken.mp4"), FAILED_SHOT, FAILED_REASON]])
    facts = {"run_id": "testrun", "models": ["runs/a", "runs/b"], "weights": [1.0, 1.0], "agg": "max",
             "fps": 10.0, "clips_ranked": 4, "clips_failed": 1, "elapsed_s": 12.5, "created": "2026-11-23T16:00:00"}
    (out / "run.json").write_text(json.dumps(facts))
    numbers = dict(LADI_V1.feature_numbers)
    rankings = {numbers[f]: sorted(shots, key=lambda s: -scores[s][CLASSES.index(f)]) for f in FEATURES}
    # qrels for the first 10 features only: one or two relevant shots each, one judged non-relevant.
    qrels = {numbers[f]: {shots[i % 4]: 1, shots[(i + 1) % 4]: int(i % 3 == 0), shots[(i + 2) % 4]: 0}
             for i, f in enumerate(FEATURES[:10])}
    (root / "qrels.txt").write_text("".join(f"{fnum} 0 {shot} {rel}\n" for fnum, judged in qrels.items()
                                            for shot, rel in judged.items()))
    return {"out": out, "scores": scores, "peaks": peaks, "rankings": rankings, "qrels": qrels, "facts": facts,
            "qrels_path": root / "qrels.txt"}


def _sections(page: str) -> dict[str, list]:
    """feature heading text -> list of (img src or None, caption text) in page order."""
    doc = lxml_html.fromstring(page)
    result = {}
    for section in doc.xpath("//section"):
        heading = section.xpath("string(h3)")
        figures = [(next(iter(fig.xpath(".//img/@src")), None), " ".join(fig.xpath("figcaption//text()")))
                   for fig in section.xpath(".//figure")]
        result[heading] = figures
    return result


def _mean_rgb(data_uri: str) -> np.ndarray:
    assert data_uri.startswith("data:image/jpeg;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1])))
    assert image.format == "JPEG" and image.width == 160
    return np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)


def test_report_shows_top_clips_at_their_peak_frame_and_run_facts(rank_folder, tmp_path):
    path = build_report(rank_folder["out"], out_path=tmp_path / "r.html", top_n=3)
    page = path.read_text(encoding="utf-8")
    sections = _sections(page)
    assert len(sections) == len(FEATURES)
    numbers = dict(LADI_V1.feature_numbers)
    for feature in FEATURES:
        figures = sections[f"{numbers[feature]}. {feature}"]
        expected = rank_folder["rankings"][numbers[feature]][:3]
        assert [caption.split()[1] for _, caption in figures] == expected
        for (src, caption), shot in zip(figures, expected, strict=True):
            score = rank_folder["scores"][shot][CLASSES.index(feature)]
            assert f"score {score:.3f}" in caption
            peak = rank_folder["peaks"][shot][feature]
            want = np.array(CLIP_COLOURS[shot][0 if peak < 1.0 else 1], dtype=np.float64)
            assert np.abs(_mean_rgb(src) - want).max() < 25, (feature, shot, peak)
    assert FAILED_SHOT not in page and FAILED_REASON not in page  # raw text never reaches the page
    assert "Shot9_&lt;&amp;&gt;" in page and "&lt;script&gt;alert(" in page
    doc = lxml_html.fromstring(page)
    facts = {row.xpath("string(th)"): row.xpath("string(td)") for row in doc.xpath("//table[1]//tr")}
    assert facts["models"] == '["runs/a", "runs/b"]' and facts["agg"] == "max"
    assert facts["clips_ranked"] == "4" and facts["elapsed_s"] == "12.5 s" and facts["failures.csv rows"] == "1"
    assert "<svg" not in page  # no qrels, no chart


def test_report_ap_chart_matches_pytrec_eval(rank_folder, tmp_path):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    out = rank_folder["out"]
    scores = rank_folder["scores"]
    numbers = dict(LADI_V1.feature_numbers)
    with (out / "testrun.trec").open("w") as handle:
        for feature in FEATURES:
            for rank, shot in enumerate(rank_folder["rankings"][numbers[feature]], start=1):
                handle.write(f"{numbers[feature]} Q0 {shot} {rank} {scores[shot][CLASSES.index(feature)]:.6f} "
                             f"testrun\n")
    try:
        path = build_report(out, qrels_path=rank_folder["qrels_path"], out_path=tmp_path / "r.html")
    finally:
        (out / "testrun.trec").unlink()
    page = path.read_text(encoding="utf-8")
    qrels = {str(fnum): judged for fnum, judged in rank_folder["qrels"].items()}
    run = {str(numbers[f]): {shot: float(scores[shot][CLASSES.index(f)]) for shot in CLIP_COLOURS}
           for f in FEATURES if str(numbers[f]) in qrels}
    reference = pytrec_eval.RelevanceEvaluator(qrels, {"map"}).evaluate(run)
    sections = _sections(page)
    for feature in FEATURES:
        fnum = numbers[feature]
        heading = next(h for h in sections if h.startswith(f"{fnum}. {feature}"))
        if str(fnum) in reference:
            assert heading.endswith(f"AP {reference[str(fnum)]['map']:.3f}")
            for _, caption in sections[heading]:
                shot = caption.split()[1]
                judged = rank_folder["qrels"][fnum]
                tag = "not judged" if shot not in judged else "relevant" if judged[shot] > 0 else "not relevant"
                assert caption.endswith(f" s {tag}"), caption
        else:
            assert "AP" not in heading and all(c.endswith(" s not judged") for _, c in sections[heading])
    mean_ap = np.mean([v["map"] for v in reference.values()])
    assert f"mAP {mean_ap:.4f} over {len(reference)} features" in page
    doc = lxml_html.fromstring(page)
    assert len(doc.xpath("//svg//rect")) == len(reference)
    assert doc.xpath("//svg//text[starts-with(., 'mAP')]")[0].text == f"mAP {mean_ap:.3f}"


def test_report_on_sample_qrels_charts_xinfap(rank_folder, tmp_path):
    """The same judgments as NIST sample qrels, every pooled shot judged in one stratum: the chart and headings show
    xinfAP (equal to AP there, up to sample_eval's 1e-5 smoothing) and its mean line says mxinfAP."""
    sampled = tmp_path / "sample_qrels.txt"
    sampled.write_text("".join(f"{fnum} 0 {shot} 1 {int(rel > 0)}\n" for fnum, judged in rank_folder["qrels"].items()
                               for shot, rel in judged.items()))
    complete = lxml_html.fromstring(build_report(rank_folder["out"], qrels_path=rank_folder["qrels_path"],
                                                 out_path=tmp_path / "complete.html").read_text(encoding="utf-8"))
    page = build_report(rank_folder["out"], qrels_path=sampled, out_path=tmp_path / "r.html").read_text("utf-8")
    doc = lxml_html.fromstring(page)
    assert "Inferred AP (NIST sample qrels) per feature (mxinfAP" in page
    mean_line = doc.xpath("//svg//text[starts-with(., 'mxinfAP')]")[0].text
    complete_line = complete.xpath("//svg//text[starts-with(., 'mAP')]")[0].text
    assert float(mean_line.split()[1]) == pytest.approx(float(complete_line.split()[1]), abs=1e-3)
    assert doc.xpath("//svg//rect/title")[0].text.split(": ")[1].startswith("xinfAP ")


def test_report_cli_writes_default_path_and_rejects_missing_folder(rank_folder, tmp_path, cli):
    cli("report", rank_folder["out"], "--topk", 1)
    assert (rank_folder["out"] / "report.html").is_file()
    result = cli("report", tmp_path / "nowhere", expect=2)
    assert "clip_scores.csv: not found" in result.output.replace("\n", "")


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def _render_in_chromium(page: Path, work: Path) -> tuple[np.ndarray, list[str], list[dict]]:
    """(screenshot RGB uint8 (2000, 1200, 3), URLs requested, failed requests and errors logged) of page in a
    fresh headless Chromium driven by chromedriver through selenium: the DevTools network events come from
    chromedriver's performance log, the errors from its browser log."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={work / f'profile-{page.stem}'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=ChromeService(executable_path=CHROMEDRIVER))
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1200, "height": 2000, "deviceScaleFactor": 1, "mobile": False})
        driver.get(page.as_uri())  # returns after the load event
        screenshot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
        events = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    finally:
        driver.quit()
    # the page's requests: those made for its document (the browser's start tab, chrome://new-tab-page, loads
    # its own resources in the same log)
    requests = {e["params"]["requestId"]: e["params"]["request"]["url"] for e in events
                if e["method"] == "Network.requestWillBeSent" and e["params"]["documentURL"] == page.as_uri()}
    failed = [e for e in events if e["method"] == "Network.loadingFailed" and e["params"]["requestId"] in requests]
    return np.asarray(screenshot), list(requests.values()), failed + errors


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="chromium or chromedriver is not installed (Debian packages `chromium chromium-driver`; "
                    ".ci/run installs them)")
def test_report_renders_in_headless_chromium_without_requests(rank_folder, tmp_path):
    page = build_report(rank_folder["out"], out_path=tmp_path / "report.html", top_n=4)
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:|#)""", text)  # every resource is embedded
    assert "http://" not in text and "https://" not in text

    # Control: the same probe sees a missing image as a failed request.
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="missing.png"></body></html>')
    _, urls, failed = _render_in_chromium(control, tmp_path)
    assert urls[-1].endswith("/missing.png") and failed

    image, urls, failed = _render_in_chromium(page, tmp_path)
    assert failed == []
    assert all(url == page.as_uri() or url.startswith("data:") for url in urls), urls
    assert image.shape[:2] == (2000, 1200)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # not blank
    # The embedded thumbnails rendered: pure clip colours cover thumbnail-sized areas of the screenshot.
    red = np.all(np.abs(image.astype(int) - (255, 0, 0)) < 30, axis=2).sum()
    blue = np.all(np.abs(image.astype(int) - (0, 0, 255)) < 30, axis=2).sum()
    assert red + blue > 160 * 100
