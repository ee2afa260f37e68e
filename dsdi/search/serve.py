"""``dsdi serve``: the analyst's web page over a rank output (the page itself: ``dsdi/data_files/serve/``).

Served with Starlette and uvicorn, both maintained by Encode: Starlette's ``FileResponse`` answers HTTP range
requests (what a ``<video>`` element needs to seek into a clip) and runs plain (sync) endpoints in a thread pool, so
a thumbnail being decoded does not hold up a search; uvicorn is its standard server, small and pure Python (h11).

Routes (JSON errors are ``{"error": "..."}`` with a 4xx status; the page shows the message):

- ``GET /``, ``GET /assets/NAME``: the page and its script and style (a fixed list of files, nothing else)
- ``GET /api/info``: the label set's features with their topics, the clip count, the judgments file, the limits
- ``POST /api/search``: ``{query, examples, like_shots, topic, feedback, topk}`` -> the ranked hits, each with its
  judgment for the topic; feedback (default true) re-ranks by the topic's judgments
- ``POST /api/examples``: an image as the request body (at most ``MAX_UPLOAD_BYTES``) -> ``{id}`` for ``examples``
- ``POST /api/judgments``: ``{topic, shot_id, relevant: true | false | null}`` -> the topic's judgments
- ``POST /api/export``: a search's body -> the ranking as a TREC run, also written to RANK_DIR/search_runs/TOPIC.trec
- ``GET /clip/SHOT_ID``, ``GET /thumb/SHOT_ID?at=SECONDS``: a clip (range requests) and a frame of it as JPEG, found
  by shot id among the index's clips: no part of a request is ever used as a file path.
"""

from __future__ import annotations

import json
import math
import mimetypes
import re
import secrets
import socket
import threading
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from dsdi.errors import InputError
from dsdi.files import write_text_atomic
from dsdi.rank.output import RankOutput, RunFacts
from dsdi.search.engine import SearchIndex
from dsdi.search.judgments import JUDGMENTS_NAME, JudgmentFile, checked_topic
from dsdi.search.media import FRAME_ERRORS, MAX_UPLOAD_BYTES, Thumbnails, example_pixels, too_large
from dsdi.search.query import Feature, Query
from dsdi.trecvid.submission import Topic, write_trec_run

PAGE_FILES = {"index.html": "text/html", "serve.js": "text/javascript", "serve.css": "text/css"}
"""The page's files (in dsdi/data_files/serve/) and their content types: all that /assets serves."""
EXAMPLES_KEPT = 32
"""Uploaded examples' embeddings kept for searches, the oldest dropped first."""
EXAMPLE_SIDE = 1024
"""An example's longest side as embedded (larger ones are scaled down first; the models see a few hundred pixels)."""
MAX_TOPK = 1000
SEARCH_RUNS = "search_runs"
RUN_ID = "dsdi_serve"


class RequestRefused(Exception):
    """A request answered with ``status`` and the JSON error ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def default_topic(query: Query | None, features: dict[str, Topic]) -> str:
    """The topic judgments of a search go under unless the analyst names one: the feature's topic for a one-feature
    query, else the query's words joined by ``_`` ("debris_any NOT water_any" -> ``debris_any_NOT_water_any``),
    ``example`` for examples alone."""
    if query is not None and isinstance(query.root, Feature):
        return str(features[query.root.name])
    text = query.text if query is not None else ""
    return re.sub(r"[^A-Za-z0-9_.:+-]+", "_", text).strip("_")[:64] or "example"


class SearchSession:
    """What one server holds: the search index, the clips by shot id, the judgments, thumbnails and examples."""

    def __init__(self, rank_dir: Path, judgments_path: Path) -> None:
        self.rank_dir = rank_dir
        self.index = SearchIndex.open(rank_dir)
        self.labelset = self.index.labelset
        self.topics = {feature: self.labelset.topics()[feature] for feature in self.labelset.features}
        output = RankOutput(rank_dir)
        facts = output.read_facts() if output.run_json.is_file() else RunFacts()
        clip_paths = output.read_clip_scores()["clip_path"]
        self.clips = {str(shot): output.clip_file(str(path), facts).resolve() for shot, path in clip_paths.items()}
        self.judgments = JudgmentFile(judgments_path)
        self.thumbnails = Thumbnails()
        self.examples: OrderedDict[str, np.ndarray] = OrderedDict()  # example id -> its unit embedding (d,)
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        features = [{"name": name, "topic": str(topic), "category": self.labelset.classes[i].category}
                    for i, (name, topic) in enumerate(self.topics.items())]
        return {"labelset": self.labelset.name, "features": features, "clips": len(self.clips),
                "judgments": str(self.judgments.path), "max_upload_bytes": MAX_UPLOAD_BYTES, "max_topk": MAX_TOPK}

    def clip_file(self, shot_id: str) -> Path:
        """The clip file of a known shot id; RequestRefused (404) otherwise."""
        path = self.clips.get(shot_id)
        if path is None or not path.is_file():
            raise RequestRefused(404, f"no clip of shot {shot_id[:80]!r} in this index")
        return path

    def add_example(self, data: bytes) -> dict[str, Any]:
        """Embed an uploaded example image once (at most EXAMPLE_SIDE px a side) and keep its embedding for
        searches; its id and size as sent. An index without embeddings refuses it here."""
        pixels = example_pixels(data)
        kept = np.asarray(ImageOps.contain(Image.fromarray(pixels), (EXAMPLE_SIDE, EXAMPLE_SIDE), Image.LANCZOS)) \
            if max(pixels.shape[:2]) > EXAMPLE_SIDE else pixels
        with self._lock:
            vector = self.index.embed_image(kept)
            example_id = secrets.token_hex(8)
            self.examples[example_id] = vector
            while len(self.examples) > EXAMPLES_KEPT:
                self.examples.popitem(last=False)
        height, width = pixels.shape[:2]
        return {"id": example_id, "width": width, "height": height}

    def search(self, body: dict[str, Any]) -> tuple[Topic, list]:
        """(the topic, the hits) of a search request's body (module docstring)."""
        text = str(body.get("query") or "").strip()
        query = self.index.parse(text) if text else None
        like_shots = [str(shot) for shot in body.get("like_shots") or ()]
        unknown = [shot for shot in like_shots if shot not in self.clips]
        if unknown:
            raise RequestRefused(400, f"no shot {unknown[0][:80]!r} in this index to search like")
        with self._lock:
            missing = [key for key in body.get("examples") or () if key not in self.examples]
            examples = [self.examples[key] for key in body.get("examples") or () if key in self.examples]
        if missing:
            raise RequestRefused(400, "an example is no longer held by the server: drop it again")
        if query is None and not examples and not like_shots:
            raise RequestRefused(400, "type a query, pick a feature or drop an example image")
        topic = checked_topic(str(body.get("topic") or default_topic(query, self.topics)))
        feedback = self.feedback(topic) if body.get("feedback", True) else {}
        topk = _bounded_topk(body.get("topk", 100))
        with self._lock:
            hits = self.index.search(query=query, like_vectors=examples, like_shots=like_shots,
                                     feedback=feedback or None, topk=topk)
        return topic, hits

    def feedback(self, topic: Topic) -> dict[str, bool]:
        """{shot id: relevant?} of the topic's judged shots of this index; {} when the index holds no embeddings
        (feedback re-ranks by them)."""
        if self.index.embeddings is None or not len(self.index.embeddings):
            return {}
        return {shot: rel > 0 for shot, rel in self.judgments.of_topic(topic).items() if shot in self.clips}

    def hit_rows(self, topic: Topic, hits: list) -> list[dict[str, Any]]:
        judged = self.judgments.of_topic(topic)
        return [{"rank": rank, "shot_id": hit.shot_id, "score": float(hit.score), "video": Path(hit.clip_path).name,
                 "time": hit.peak_s, "judged": judged.get(hit.shot_id), "features": _top_features(hit.features)}
                for rank, hit in enumerate(hits, start=1)]

    def judge(self, body: dict[str, Any]) -> dict[str, Any]:
        """Save a judgment request's ``{topic, shot_id, relevant}``; the topic's judgments after it."""
        topic = checked_topic(str(body.get("topic") or ""))
        shot_id = str(body.get("shot_id") or "")
        relevant = body.get("relevant")
        if shot_id not in self.clips or relevant not in (True, False, None):
            raise RequestRefused(400, f"judge a shot of this index ({shot_id[:80]!r} is not) as relevant: true, "
                                      "false or null")
        judged = self.judgments.judge(topic, shot_id, relevant)
        return {"topic": str(topic), "judged": judged, "file": str(self.judgments.path)}

    def thumbnail(self, shot_id: str, at: str) -> bytes:
        """The JPEG of a known shot's frame at ``at`` seconds into its clip file."""
        path = self.clip_file(shot_id)
        try:
            time_s = float(at)
        except ValueError:
            raise RequestRefused(400, f"at={at[:20]!r}: a time in seconds into the clip") from None
        try:
            return self.thumbnails.jpeg(path, time_s)
        except FRAME_ERRORS as error:
            raise RequestRefused(404, f"no frame at {time_s:g} s of {shot_id}: {str(error)[-160:]}") from None

    def export(self, body: dict[str, Any]) -> Path:
        """Write the search's ranking as a TREC run, RANK_DIR/search_runs/TOPIC.trec; its path."""
        topic, hits = self.search(body)
        path = self.rank_dir / SEARCH_RUNS / f"{topic}.trec"
        if hits:
            write_trec_run(path, {topic: [(hit.shot_id, float(hit.score)) for hit in hits]}, RUN_ID)
        else:
            write_text_atomic(path, "")
        return path


def _bounded_topk(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOPK:
        raise RequestRefused(400, f"topk {str(value)[:20]}: ask for 1 to {MAX_TOPK} results")
    return value


def _top_features(scores: dict[str, float], count: int = 3) -> list[list]:
    """The ``count`` highest feature scores of a hit as [name, score] pairs (NaN scores left out)."""
    pairs = sorted(((name, score) for name, score in scores.items() if math.isfinite(score)), key=lambda p: -p[1])
    return [list(pair) for pair in pairs[:count]]


def create_app(rank_dir: str | Path, judgments_path: str | Path | None = None) -> Starlette:
    """The Starlette app serving the rank output ``rank_dir`` (judgments into ``judgments_path``, default
    RANK_DIR/judgments.qrels); InputError when the folder is not a rank output with a search index."""
    rank_dir = Path(rank_dir)
    session = SearchSession(rank_dir, Path(judgments_path) if judgments_path else rank_dir / JUDGMENTS_NAME)

    async def page(request: Request) -> Response:
        return _page_file("index.html")

    async def asset(request: Request) -> Response:
        return _page_file(request.path_params["name"])

    async def info(request: Request) -> Response:
        return JSONResponse(session.info())

    async def search(request: Request) -> Response:
        body = await _json_body(request)

        def answer() -> dict[str, Any]:
            topic, hits = session.search(body)
            return {"topic": str(topic), "hits": session.hit_rows(topic, hits)}

        return JSONResponse(await run_in_threadpool(answer))

    async def example(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(session.add_example, await _upload_body(request)))

    async def judge(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(session.judge, await _json_body(request)))

    async def export(request: Request) -> Response:
        path = await run_in_threadpool(session.export, await _json_body(request))
        return JSONResponse({"path": str(path), "text": path.read_text(encoding="utf-8")})

    async def clip(request: Request) -> Response:
        path = session.clip_file(request.path_params["shot_id"])
        return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")

    async def thumbnail(request: Request) -> Response:
        data = await run_in_threadpool(session.thumbnail, request.path_params["shot_id"],
                                       request.query_params.get("at", "0"))
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    routes = [Route("/", page), Route("/assets/{name}", asset), Route("/api/info", info),
              Route("/api/search", search, methods=["POST"]), Route("/api/examples", example, methods=["POST"]),
              Route("/api/judgments", judge, methods=["POST"]), Route("/api/export", export, methods=["POST"]),
              Route("/clip/{shot_id:path}", clip), Route("/thumb/{shot_id:path}", thumbnail)]
    return Starlette(routes=routes, exception_handlers={RequestRefused: _refusal, InputError: _refusal})


async def _refusal(request: Request, error: Exception) -> Response:
    """A refused request as ``{"error": message}`` with its status (400 for a user mistake)."""
    return JSONResponse({"error": str(error)}, status_code=getattr(error, "status", 400))


def _page_file(name: str) -> Response:
    if name not in PAGE_FILES:
        raise RequestRefused(404, f"no page file {name[:80]!r}")
    data = resources.files("dsdi").joinpath("data_files", "serve", name).read_bytes()
    return Response(data, media_type=PAGE_FILES[name], headers={"Cache-Control": "no-cache"})


async def _json_body(request: Request, limit: int = 1 << 20) -> dict[str, Any]:
    """A request's JSON object (at most ``limit`` bytes); RequestRefused (400) for anything else."""
    data = await request.body()
    try:
        body = json.loads(data) if len(data) <= limit else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = None
    if not isinstance(body, dict):
        raise RequestRefused(400, "expected a JSON object as the request body")
    return body


async def _upload_body(request: Request) -> bytes:
    """An upload's bytes; UploadRefused (413) past MAX_UPLOAD_BYTES. The rest of a too large body is read and
    dropped (not kept), so that the client gets the answer rather than a broken connection."""
    kept, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= MAX_UPLOAD_BYTES:
            kept.append(chunk)
    if size > MAX_UPLOAD_BYTES:
        raise too_large(size)
    return b"".join(kept)


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host``:``port`` (0: a free port); InputError naming --host/--port if it cannot."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as error:
        raise InputError(f"--host {host} --port {port}: cannot listen there ({error.strerror or error}); pick "
                         "another --port, or a --host of this machine") from None


def serve(rank_dir: str | Path, host: str, port: int, judgments_path: str | Path | None = None,
          announce=print) -> None:
    """Serve the page over ``rank_dir`` on ``host``:``port`` until interrupted; ``announce(url)`` once listening."""
    import uvicorn

    app = create_app(rank_dir, judgments_path)
    listener = listening_socket(host, port)
    shown_host = f"[{host}]" if ":" in host else host
    announce(f"http://{shown_host}:{listener.getsockname()[1]}/")
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listener])
