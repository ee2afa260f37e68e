"""dsdi report on a real `dsdi rank`-style folder: H.264 clips made by the ffmpeg CLI whose frames have known
colours, contract CSV/JSON/TREC files, AP checked against pytrec_eval, and the page rendered in headless
Chromium."""

from __future__ import annotations

import base64
import csv
import fcntl
import io
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from colour_clips import make_colour_clip
from lxml import html as lxml_html
from PIL import Image
from typer.testing import CliRunner

from dsdi.cli.app import app
from dsdi.labels.schema import CLASSES, FEATURES, load_feature_numbers
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
    numbers = load_feature_numbers()
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
    numbers = load_feature_numbers()
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
    numbers = load_feature_numbers()
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


def _invoke_report(*args: str):
    # typer runs an app with a single registered command without its name.
    prefix = ["report"] if len(app.registered_commands) > 1 else []
    return CliRunner().invoke(app, [*prefix, *args])


def test_report_cli_writes_default_path_and_rejects_missing_folder(rank_folder, tmp_path):
    result = _invoke_report(str(rank_folder["out"]), "--top", "1")
    assert result.exit_code == 0, result.output
    assert (rank_folder["out"] / "report.html").is_file()
    result = _invoke_report(str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and "clip_scores.csv: not found" in result.output.replace("\n", "")


class DevToolsPipe:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: commands in on
    fd 3, replies and events out on fd 4, NUL-separated JSON), so no websocket library is needed."""

    def __init__(self, profile: Path) -> None:
        to_chrome, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome = os.pipe()
        # bash (not dash) for fd numbers >= 10 in redirections; the high copies cannot collide with fds 3 and 4.
        child_in, child_out = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome, from_chrome))
        for fd in (to_chrome, from_chrome):
            os.close(fd)
        command = ("exec chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking"
                   f" --user-data-dir={profile} --remote-debugging-pipe about:blank 3<&{child_in} 4>&{child_out}")
        self._process = subprocess.Popen(["bash", "-c", command], pass_fds=(child_in, child_out),
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (child_in, child_out):
            os.close(fd)
        self._buffer = b""
        self._last_id = 0
        self.events: list[dict] = []

    def _next_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_chrome], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._from_chrome, 1 << 20) if ready else b""
            if not chunk:
                raise TimeoutError("chromium did not answer over the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        self.events.append(message)
        return message

    def wait_for(self, predicate, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while not predicate(message := self._next_message(deadline)):
            pass
        return message

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._last_id += 1
        request = {"id": self._last_id, "method": method, "params": params or {}}
        request |= {"sessionId": session} if session else {}
        os.write(self._to_chrome, json.dumps(request).encode() + b"\0")
        reply = self.wait_for(lambda message: message.get("id") == self._last_id)
        assert "error" not in reply, reply
        return reply["result"]

    def render(self, url: str, screenshot: Path) -> None:
        """Load url in a 1200x2000 viewport, wait for the load event, save a PNG screenshot."""
        target = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        session = self.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1200, "height": 2000, "deviceScaleFactor": 1, "mobile": False}, session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_for(lambda message: message.get("method") == "Page.loadEventFired")
        shot = self.call("Page.captureScreenshot", {"format": "png"}, session=session)
        screenshot.write_bytes(base64.b64decode(shot["data"]))

    def requests(self) -> tuple[list[str], list[dict]]:
        """(URLs requested, loadingFailed events and network errors logged) seen so far."""
        urls = [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]
        failed = [e for e in self.events if e.get("method") == "Network.loadingFailed"
                  or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
        return urls, failed

    def close(self) -> None:
        os.write(self._to_chrome, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        self._process.wait(timeout=30)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def _render_in_chromium(page: Path, work: Path) -> tuple[np.ndarray, list[str], list[dict]]:
    """(screenshot RGB uint8 (H,W,3), requested URLs, failed requests) of page in a fresh headless Chromium."""
    browser = DevToolsPipe(work / f"profile-{page.stem}")
    try:
        browser.render(page.as_uri(), work / f"{page.stem}.png")
    finally:
        browser.close()
    return np.asarray(Image.open(work / f"{page.stem}.png").convert("RGB")), *browser.requests()


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (Debian package `chromium`; .ci/run installs it)")
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
