"""The review web app (FastAPI): one page, a JSON API, images looked up by pair id.

Security model: the server binds 127.0.0.1 by default and every request must carry the random
token printed at start-up (``?token=``, header ``X-Idleak-Token`` or ``Authorization: Bearer``, or
the HttpOnly cookie the first page sets): none gives 401, a wrong one 403. Images are found by
(pair id, side) among the pairs of this OUT folder and re-encoded as JPEG, so no client-given path
ever reaches the file system; static files come from a fixed list. Names are shown with
``textContent`` only, and a strict Content-Security-Policy forbids inline scripts.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from idleak.errors import IdleakError, ImageError
from idleak.images import load_rgb
from idleak.report.thumbs import face_crop, jpeg_bytes
from idleak.review.candidates import CandidateSet, load_candidates
from idleak.review.db import VERDICTS, VerdictStore, review_counts

STATIC = Path(__file__).parent / "static"
#: The only files served from ``static/`` (name -> content type).
STATIC_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                "app.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
IMAGE_SIZE = 360
PAGE_LIMIT = 500


def cookie_name(token: str) -> str:
    """Cookie for this server's token (named after it, so servers on other ports do not clash)."""
    return "idleak_" + hashlib.sha256(token.encode()).hexdigest()[:12]


def presented_token(request: Request, token: str) -> str | None:
    """The token a request carries, from the query, a header or the cookie (None if none)."""
    auth = request.headers.get("authorization", "")
    for value in (request.query_params.get("token"), request.headers.get("x-idleak-token"),
                  auth[7:] if auth.lower().startswith("bearer ") else None,
                  request.cookies.get(cookie_name(token))):
        if value:
            return value
    return None


def face_jpeg(path: Path, box: list[float] | None, size: int = IMAGE_SIZE, margin: float = 0.45) -> bytes:
    """The image at ``path``, cropped around ``box`` with a margin, at most ``size`` px, as JPEG bytes."""
    return jpeg_bytes(face_crop(load_rgb(path), box, margin, full_fraction=0.8), size, quality=90)


class _ImageCache:
    """A few recently served JPEGs, by (pair id, side)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._data: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str], make: Callable[[], bytes]) -> bytes:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        data = make()
        with self._lock:
            self._data[key] = data
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return data


def create_app(out: str | os.PathLike[str], token: str, candidates: CandidateSet | None = None) -> FastAPI:
    """The review app for one OUT folder; every request must carry ``token``."""
    if not token or len(token) < 16:
        raise IdleakError("the review token must be at least 16 characters")
    out = Path(out)
    pairs = candidates or load_candidates(out)
    store = VerdictStore(out / "review.sqlite")
    images = _ImageCache()
    cookie = cookie_name(token)
    app = FastAPI(title="idleak review", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        given = presented_token(request, token)
        if given is None:
            response = JSONResponse({"error": "token required: open the URL idleak review printed"}, 401)
        elif not secrets.compare_digest(given.encode(), token.encode()):
            response = JSONResponse({"error": "wrong token"}, 403)
        else:
            response = await call_next(request)
            if request.query_params.get("token") and request.url.path == "/":
                response.set_cookie(cookie, token, httponly=True, samesite="strict", path="/")
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            return JSONResponse({"error": "not found"}, 404)
        return Response((STATIC / name).read_bytes(), media_type=STATIC_FILES[name])

    @app.get("/")
    def index() -> Response:
        return static("index.html")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/static/{name}")
    def static_file(name: str) -> Response:
        return static(name)

    def counts() -> dict:
        return review_counts(store.verdicts(), pairs)

    @app.get("/api/info")
    def info() -> dict:
        verdicts = store.verdicts()
        first_open = next((i for i, c in enumerate(pairs.items) if c.id not in verdicts), 0)
        return {"analysis": pairs.analysis, "out": str(out), "total": len(pairs),
                "left_title": pairs.left_title, "right_title": pairs.right_title, "question": pairs.question,
                "verdicts": list(VERDICTS), "first_unreviewed": first_open,
                "counts": review_counts(verdicts, pairs)}

    @app.get("/api/candidates")
    def candidate_page(offset: int = 0, limit: int = 100) -> dict:
        offset, limit = max(0, offset), max(1, min(PAGE_LIMIT, limit))
        verdicts = store.verdicts()
        rows = []
        for i, c in enumerate(pairs.items[offset:offset + limit], start=offset):
            rows.append({"index": i, "id": c.id, "similarity": c.similarity, "flagged": c.flagged,
                         "left_label": c.left_label, "right_label": c.right_label, "note": c.note,
                         "verdict": verdicts.get(c.id)})
        return {"offset": offset, "total": len(pairs), "items": rows}

    @app.get("/api/image/{pair_id}/{side}")
    def image(pair_id: str, side: str) -> Response:
        pair = pairs.get(pair_id)
        if pair is None or side not in ("left", "right"):
            return JSONResponse({"error": "no such image"}, 404)
        path, box = (pair.left_path, pair.left_box) if side == "left" else (pair.right_path, pair.right_box)
        try:
            data = images.get((pair_id, side), lambda: face_jpeg(pairs.resolve(path), box))
        except ImageError as exc:
            return JSONResponse({"error": f"image unavailable: {exc.reason}"}, 410)
        return Response(data, media_type="image/jpeg")

    @app.post("/api/verdict")
    async def verdict(request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("application/json"):
            return JSONResponse({"error": "send JSON"}, 415)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "invalid JSON"}, 400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "send a JSON object"}, 400)
        pair = pairs.get(str(body.get("pair_id", "")))
        value = body.get("verdict")
        if pair is None:
            return JSONResponse({"error": "no such pair"}, 404)
        if value is not None and value not in VERDICTS:
            return JSONResponse({"error": f"verdict must be one of {', '.join(VERDICTS)} or null"}, 400)
        store.set(pair.id, value, pair.left_path, pair.right_path, pair.similarity)
        return JSONResponse({"pair_id": pair.id, "verdict": value, "counts": counts()})

    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise IdleakError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_for(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


def check_images(pairs: CandidateSet) -> None:
    """Every image of the pairs can be found (absolute, or relative to OUT), except those the analysis could
    not read either (``evidence_unavailable`` in summary.json); otherwise a one-line error naming one."""
    import json

    summary = json.loads((Path(pairs.out) / "summary.json").read_text(encoding="utf-8"))
    allowed = set(summary.get("evidence_unavailable") or [])
    missing = [p for c in pairs.items for p in (c.left_path, c.right_path)
               if p and p not in allowed and not pairs.resolve(p).is_file()]
    if missing:
        more = f" and {len(set(missing)) - 1} more" if len(set(missing)) > 1 else ""
        raise IdleakError(f"review: image not found: {pairs.resolve(missing[0])}{more}; restore the images (or move "
                          f"OUT back) before reviewing")


def serve(out: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8765,
          announce: Callable[[str, CandidateSet], None] | None = None) -> None:
    """Run the review server until interrupted; ``announce(url, candidates)`` is called once it listens."""
    import uvicorn

    pairs = load_candidates(out)
    check_images(pairs)
    token = secrets.token_urlsafe(24)
    app = create_app(out, token, pairs)
    sock = bind(host, port)
    url = url_for(host, sock.getsockname()[1], token)
    if announce:
        announce(url, pairs)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])
