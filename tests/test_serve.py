"""dsdi serve on a real `dsdi rank` output (a tiny colour-calibrated model over H.264 clips of known colours), the
server started for real on a free port in a thread: what it serves (only the index's clips, by shot id, with range
requests), what it refuses (path traversal, uploads that are not images or too large), judgments saved under
concurrency and read by `dsdi eval`, the CLI, and the page in headless Chromium (selenium and chromedriver)."""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from colour_clips import make_colour_clip
from conftest import finish_run, tiny_checkpoint
from PIL import Image

from dsdi.labels.labelset import load_labelset
from dsdi.search.engine import SearchIndex
from dsdi.search.judgments import JudgmentFile
from dsdi.search.media import MAX_UPLOAD_BYTES
from dsdi.search.serve import create_app, listening_socket
from dsdi.trecvid.evaluation import average_precision
from dsdi.trecvid.qrels import read_qrels
from dsdi.video.decode import frame_at

REPO = Path(__file__).resolve().parents[1]
LABELSET = load_labelset("ladi-v2a")
# Each clip shows its first colour for 2 s, then its second for 2 s (10 fps, 160x120).
CLIP_COLOURS = {
    "Shot1_001": ("red", "blue"), "Shot1_002": ("green", "yellow"), "Shot2_001": ("magenta", "cyan"),
    "Shot2_002": ("white", "black"), "Shot3_001": ("orange", "purple"), "Shot3_002": ("gray", "navy"),
}
OPENED: list[str] = []
_RECORDING = threading.Event()


def _record_opens(event: str, args: tuple) -> None:
    """Audit hook: the paths this process opens while _RECORDING is set (builtins.open, io.open, os.open)."""
    if event == "open" and _RECORDING.is_set() and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_record_opens)


class RunningServer:
    """A uvicorn server of ``app`` on a free port of 127.0.0.1 in a thread of this process."""

    def __init__(self, app) -> None:
        listener = listening_socket("127.0.0.1", 0)
        self.port = listener.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [listener]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started, "the server did not start"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: bytes | dict | None = None,
                headers: dict | None = None) -> tuple[int, dict, bytes]:
        """(status, headers with lower-case names, body) of one request; ``path`` is sent as is (no normalising)."""
        headers = dict(headers or {})
        if isinstance(body, dict):
            body, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def json(self, method: str, path: str, body: dict | bytes | None = None, expect: int = 200, **kw) -> dict:
        status, _, data = self.request(method, path, body, **kw)
        assert status == expect, (status, data[:300])
        return json.loads(data)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def ranked(tmp_path_factory, ffmpeg_exe, cli) -> dict:
    """A `dsdi rank` output of a colour-calibrated tiny ladi-v2a model over six colour clips."""
    root = tmp_path_factory.mktemp("serve")
    clips = root / "clips"
    clips.mkdir()
    for shot, colours in CLIP_COLOURS.items():
        make_colour_clip(ffmpeg_exe, clips / f"{shot}.mp4", [(colour, 2.0) for colour in colours], (160, 120),
                         rate=10, gop=None)
    run = root / "run"
    tiny_checkpoint(run, img_size=64, seed=3, head_std=(0.3, 0.5), colour_calibrated=True, labelset=LABELSET)
    finish_run(run)
    out = root / "out"
    cli("rank", "--clips", clips, "--models", run, "--out", out, "--device", "cpu", "--run-id", "colours")
    (root / "secret.txt").write_text("SECRET CONTENT\n")
    return {"root": root, "clips": clips, "out": out, "secret": root / "secret.txt"}


@pytest.fixture(scope="module")
def served(ranked):
    server = RunningServer(create_app(ranked["out"], ranked["root"] / "judgments.qrels"))
    yield server
    server.stop()


def _search(server: RunningServer, **body) -> dict:
    return server.json("POST", "/api/search", {"topk": 100, **body})


def test_page_and_its_files_are_served_locally(served):
    status, headers, page = served.request("GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"http://" not in page and b"https://" not in page
    for name, kind in (("serve.js", "text/javascript"), ("serve.css", "text/css")):
        assert f"/assets/{name}".encode() in page
        status, headers, data = served.request("GET", f"/assets/{name}")
        assert status == 200 and headers["content-type"].startswith(kind) and len(data) > 500
        assert b"http://" not in data and b"https://" not in data  # nothing from the network
    info = served.json("GET", "/api/info")
    assert [feature["name"] for feature in info["features"]] == list(LABELSET.features)
    assert info["clips"] == len(CLIP_COLOURS) and info["max_upload_bytes"] == MAX_UPLOAD_BYTES


@pytest.mark.parametrize("path", [
    "/clip/../../etc/passwd", "/clip/..%2f..%2f..%2fetc%2fpasswd", "/clip/%2e%2e/%2e%2e/secret.txt",
    "/clip/%2Fetc%2Fpasswd", "/clip//etc/passwd", "/thumb/..%2F..%2Fsecret.txt?at=0", "/thumb/../secret.txt",
    "/assets/..%2F..%2Fsearch%2Fserve.py", "/assets/../../../etc/passwd", "/clip/..\\..\\secret.txt",
    "/clip/Shot1_001.mp4", "/clip/SECRET", "/clip/%00", "/clip/Shot1_001/../../secret.txt",
])
def test_path_traversal_reaches_no_file(served, ranked, path):
    OPENED.clear()
    _RECORDING.set()
    try:
        status, _, data = served.request("GET", path)
    finally:
        _RECORDING.clear()
    assert status in (400, 404), (status, data[:200])
    assert b"root:" not in data and b"SECRET CONTENT" not in data
    assert not [name for name in OPENED if "passwd" in name or "secret" in name or name.endswith(".py")], OPENED


def test_the_traversal_probe_sees_a_clip_being_read(served, ranked):
    OPENED.clear()
    _RECORDING.set()
    try:
        status, _, data = served.request("GET", "/clip/Shot1_001")
    finally:
        _RECORDING.clear()
    clip = ranked["clips"] / "Shot1_001.mp4"
    assert status == 200 and data == clip.read_bytes()
    assert str(clip.resolve()) in OPENED  # the audit hook sees the server's reads


def test_clip_answers_range_requests(served, ranked):
    whole = (ranked["clips"] / "Shot2_001.mp4").read_bytes()
    status, headers, data = served.request("GET", "/clip/Shot2_001")
    assert (status, headers["content-type"], headers["accept-ranges"]) == (200, "video/mp4", "bytes")
    assert data == whole
    status, headers, data = served.request("GET", "/clip/Shot2_001", headers={"Range": "bytes=100-1099"})
    assert status == 206 and headers["content-range"] == f"bytes 100-1099/{len(whole)}" and data == whole[100:1100]
    status, _, data = served.request("GET", "/clip/Shot2_001", headers={"Range": f"bytes={len(whole) - 10}-"})
    assert status == 206 and data == whole[-10:]
    status, _, _ = served.request("GET", "/clip/Shot2_001", headers={"Range": f"bytes={len(whole) + 5}-"})
    assert status == 416


def test_thumbnail_is_the_clip_frame_at_the_time_asked(served, ranked):
    status, headers, data = served.request("GET", "/thumb/Shot1_001?at=2.5")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    thumbnail = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=float)
    assert thumbnail.shape == (180, 240, 3)
    assert np.abs(thumbnail.mean(axis=(0, 1)) - (0, 0, 255)).max() < 20  # blue: the clip's second colour
    assert served.request("GET", "/thumb/Shot1_001?at=soon")[0] == 400
    assert served.request("GET", "/thumb/Shot1_001?at=99")[0] == 404  # past the end: no frame


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_uploads_that_are_not_images_or_too_large_are_refused(served):
    refusals = {
        b"%PDF-1.4 not an image": 415,
        _jpeg(np.zeros((32, 32, 3), np.uint8))[:200]: 415,  # a truncated JPEG fails Pillow's verify
        b"\xff\xd8" + b"\0" * (MAX_UPLOAD_BYTES - 1): 413,
    }
    for data, status in refusals.items():
        answer = served.json("POST", "/api/examples", data, expect=status,
                             headers={"Content-Type": "application/octet-stream"})
        assert ("not an image" if status == 415 else "the limit is 20 MB") in answer["error"]
    huge = io.BytesIO()
    Image.new("L", (8000, 7000)).save(huge, format="PNG")  # small file, 56 megapixels
    answer = served.json("POST", "/api/examples", huge.getvalue(), expect=413)
    assert "8000x7000 pixels; the limit is 50 megapixels" in answer["error"]


def test_example_upload_finds_the_clip_it_was_grabbed_from(served, ranked, monkeypatch):
    embedded = []
    embed_image = SearchIndex.embed_image
    monkeypatch.setattr(SearchIndex, "embed_image",
                        lambda self, pixels: embedded.append(1) or embed_image(self, pixels))
    grab = frame_at(ranked["clips"] / "Shot1_002.mp4", 0.5)
    example = served.json("POST", "/api/examples", _jpeg(grab), headers={"Content-Type": "image/jpeg"})
    assert (example["width"], example["height"]) == (160, 120)
    answer = _search(served, examples=[example["id"]])
    assert answer["topic"] == "example" and answer["hits"][0]["shot_id"] == "Shot1_002"
    _search(served, examples=[example["id"]], query=LABELSET.features[0])
    assert len(embedded) == 1  # the upload embeds it; searches reuse the embedding
    gone = served.json("POST", "/api/search", {"examples": ["0123456789abcdef"]}, expect=400)
    assert "drop it again" in gone["error"]


def test_search_by_feature_and_refusals(served, ranked):
    feature = LABELSET.features[0]
    answer = _search(served, query=feature)
    assert answer["topic"] == feature and len(answer["hits"]) == len(CLIP_COLOURS)
    hit = answer["hits"][0]
    assert hit["rank"] == 1 and hit["video"] == f"{hit['shot_id']}.mp4" and 0 <= hit["time"] <= 4
    scores = [row["score"] for row in answer["hits"]]
    assert scores == sorted(scores, reverse=True)
    assert _search(served, query=f'"{feature.upper()}"')["topic"] == feature  # one feature, however written
    assert _search(served, query=f"{feature} NOT water_any")["topic"] == f"{feature}_NOT_water_any"
    for body, message in (({"query": "flooding_any AND volcano"}, "volcano"),
                          ({}, "type a query, pick a feature or drop an example image"),
                          ({"query": feature, "topic": "two words"}, "name it with 1-64 letters"),
                          ({"query": feature, "topk": 0}, "ask for 1 to 1000 results"),
                          ({"like_shots": ["ShotX"]}, "no shot 'ShotX' in this index")):
        assert message in served.json("POST", "/api/search", body, expect=400)["error"]
    status, _, data = served.request("POST", "/api/search", b"[1, 2", {"Content-Type": "application/json"})
    assert status == 400 and b"expected a JSON object" in data


def test_concurrent_judging_loses_no_judgment(ranked):
    server = RunningServer(create_app(ranked["out"], ranked["root"] / "concurrent.qrels"))
    try:
        shots = list(CLIP_COLOURS)
        topics = [f"topic{i}" for i in range(8)]
        expected = {topic: {shot: (i + j) % 2 for j, shot in enumerate(shots)} for i, topic in enumerate(topics)}
        errors = []

        def judge_topic(topic: str) -> None:
            for shot in shots:  # first the opposite mark, then the final one: the re-judgment replaces it
                for relevant in (not expected[topic][shot], bool(expected[topic][shot])):
                    status, _, data = server.request("POST", "/api/judgments",
                                                     {"topic": topic, "shot_id": shot, "relevant": relevant})
                    if status != 200:
                        errors.append(data)

        threads = [threading.Thread(target=judge_topic, args=(topic,)) for topic in topics]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        path = ranked["root"] / "concurrent.qrels"
        assert read_qrels(path) == expected
        assert len(path.read_text().splitlines()) == len(topics) * len(shots)
        cleared = server.json("POST", "/api/judgments", {"topic": "topic0", "shot_id": shots[0], "relevant": None})
        assert shots[0] not in cleared["judged"] and shots[0] not in read_qrels(path)["topic0"]
    finally:
        server.stop()


def test_judgments_and_the_exported_run_go_through_dsdi_eval(served, ranked, cli, tmp_path):
    feature = "flooding_any"
    first = _search(served, query=feature, feedback=False)["hits"]
    relevant = {first[1]["shot_id"], first[4]["shot_id"]}
    for hit in first[:5]:
        served.json("POST", "/api/judgments", {"topic": feature, "shot_id": hit["shot_id"],
                                               "relevant": hit["shot_id"] in relevant})
    again = _search(served, query=feature)
    assert {hit["shot_id"]: hit["judged"] for hit in again["hits"] if hit["judged"] is not None} == {
        hit["shot_id"]: int(hit["shot_id"] in relevant) for hit in first[:5]}
    exported = served.json("POST", "/api/export", {"query": feature, "topk": 100})
    run = Path(exported["path"])
    assert run == ranked["out"] / "search_runs" / f"{feature}.trec" and run.read_text() == exported["text"]
    ranked_shots = [line.split()[2] for line in exported["text"].splitlines()]
    assert ranked_shots == [hit["shot_id"] for hit in again["hits"]]
    result = cli("eval", "--run", run, "--qrels", ranked["root"] / "judgments.qrels", "--labelset", "ladi-v2a",
                 "--out", tmp_path / "eval.csv")
    table = {row.split(",")[0]: row.split(",") for row in (tmp_path / "eval.csv").read_text().splitlines()}
    assert f"mAP {average_precision(ranked_shots, relevant, 1000):.4f}" in cli.said(result)
    assert table[feature][2:4] == ["2", str(len(CLIP_COLOURS))]  # relevant, retrieved


def test_feedback_moves_judged_relevant_shots_up(served):
    topic = "feedback_probe"
    plain = _search(served, query="water_any", topic=topic, feedback=False)["hits"]
    last = plain[-1]["shot_id"]
    served.json("POST", "/api/judgments", {"topic": topic, "shot_id": last, "relevant": True})
    moved = _search(served, query="water_any", topic=topic)["hits"]
    assert [hit["shot_id"] for hit in moved].index(last) < len(plain) - 1


def test_judgment_file_replaces_and_removes_lines(tmp_path):
    store = JudgmentFile(tmp_path / "j.qrels")
    assert store.read() == {}
    store.judge(5, "shotA", True)
    store.judge("roads_any", "shotB", False)
    store.judge(5, "shotA", False)
    assert (tmp_path / "j.qrels").read_text() == "5 0 shotA 0\nroads_any 0 shotB 0\n"
    store.judge(5, "shotA", None)
    assert read_qrels(tmp_path / "j.qrels") == {"roads_any": {"shotB": 0}}


def test_serve_command_listens_and_refuses_a_busy_port(ranked, cli):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("serve", ranked["out"], "--port", port, expect=2)
    assert f"--host 127.0.0.1 --port {port}: cannot listen there" in cli.said(result)
    missing = cli("serve", ranked["root"] / "nothing", expect=2)
    assert "nothing" in cli.said(missing)


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOT = os.environ.get("DSDI_SERVE_SCREENSHOT")
"""Where the browser test saves its screenshot of the page with results, when set (to look at the page)."""


def _chromium(work: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                 f"--user-data-dir={work / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=ChromeService(executable_path=CHROMEDRIVER))


def _wait(driver, script: str, what: str, seconds: float = 30):
    """The first truthy value of the JavaScript ``script`` (a ``return ...``), polled; fails naming ``what``."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.05).until(
        lambda d: d.execute_script(script), message=f"waiting for {what}")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="chromium or chromedriver is not installed (Debian packages `chromium chromium-driver`; "
                    ".ci/run installs them)")
def test_the_page_in_chromium_searches_plays_and_judges(ranked, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    judgments = tmp_path / "browser.qrels"
    server = RunningServer(create_app(ranked["out"], judgments))
    driver = _chromium(tmp_path)
    try:
        driver.get(server.url)
        _wait(driver, "return document.querySelectorAll('#features button').length", "the feature picker")
        driver.find_element(By.ID, "query").send_keys("flooding_any OR 2*water_any", Keys.ENTER)
        _wait(driver, f"return document.querySelectorAll('.hit').length == {len(CLIP_COLOURS)}", "the result grid")
        _wait(driver, "return [...document.querySelectorAll('.hit img')].every(i => i.complete && i.naturalWidth > 0)",
              "the thumbnails")
        assert driver.execute_script("return [...document.querySelectorAll('.hit img')].map(i => i.naturalWidth)") \
            == [240] * len(CLIP_COLOURS)

        # play: a hit whose peak is 2 s into its 4 s clip (the colour change), so that starting at 0 fails
        cards = driver.find_elements(By.CSS_SELECTOR, ".hit")
        card = max(cards, key=lambda c: float(c.get_attribute("data-time")))
        peak = float(card.get_attribute("data-time"))
        assert peak == 2.0
        card.find_element(By.TAG_NAME, "img").click()
        _wait(driver, "const v = document.getElementById('video'); return !v.paused && v.currentTime > 0",
              "the clip to play")
        playing = driver.execute_script("const v = document.getElementById('video'); "
                                        "return [v.currentTime, v.paused, v.currentSrc]")
        assert peak - 0.05 <= playing[0] < peak + 1.0 and playing[1] is False, (peak, playing)
        assert playing[2].endswith(f"/clip/{card.get_attribute('data-shot')}")

        # judge: marked relevant, saved in the judgments file, shown on the re-ranked card
        shot = cards[-1].get_attribute("data-shot")
        cards[-1].find_element(By.CSS_SELECTOR, ".mark-relevant").click()
        _wait(driver, "return document.getElementById('message').textContent.includes('saved in')",
              "the judgment to be saved")
        assert read_qrels(judgments) == {"flooding_any_OR_2_water_any": {shot: 1}}
        assert driver.execute_script(f"return document.querySelector('.hit[data-shot=\"{shot}\"]').className") == \
            "hit relevant"
        if SCREENSHOT:
            driver.execute_script("window.scrollTo(0, 0)")
            driver.save_screenshot(SCREENSHOT)

        # an example chosen in the drop zone's file dialog: searched for alone, its own clip first
        grab = tmp_path / "grab.jpg"
        grab.write_bytes(_jpeg(frame_at(ranked["clips"] / "Shot2_002.mp4", 0.5)))
        driver.find_element(By.ID, "query").clear()
        driver.find_element(By.ID, "file").send_keys(str(grab))
        _wait(driver, "return document.querySelectorAll('#examples img').length == 1 && "
                      "document.getElementById('message').textContent.includes('topic example')", "the example search",
              seconds=10)
        assert driver.execute_script("return document.querySelector('.hit').dataset.shot") == "Shot2_002", \
            driver.find_element(By.ID, "message").text
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()
        server.stop()
