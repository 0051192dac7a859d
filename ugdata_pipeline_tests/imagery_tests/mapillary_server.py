"""A loopback HTTP server that speaks the parts of the Mapillary API v4 the pipeline uses, as the real service does.

Real HTTP on 127.0.0.1 (``ThreadingHTTPServer`` in a background thread, one thread per connection, so a per-request
``latency_s`` sleep does not hold up other requests). The shapes follow the real responses in
``mapillary_fixtures/`` (see its README; © Mapillary contributors, CC BY-SA 4.0):

* ``GET /maps/vtp/mly1_public/2/14/<x>/<y>?access_token=<token>`` -> a Mapbox Vector Tile: the real fixture tile
  when one is registered for that address (:attr:`MapillaryServer.tile_files`), else a tile encoded from the
  images the server holds, with an ``image`` layer of points (``id`` integer when numeric, ``captured_at`` ms,
  ``compass_angle``, ``sequence_id``, ``organization_id``, ``is_pano``) like the real z14 tiles;
* ``GET /<image_id>?fields=...`` -> the image entity with the requested fields, shaped like the real ones:
  ``geometry`` / ``computed_geometry`` GeoJSON points, ``captured_at`` ms, ``compass_angle`` /
  ``computed_compass_angle``, ``sequence`` id string, ``creator`` ``{"username", "id"}``, ``thumb_*_url``
  (``<server>/thumbs/<id>.jpg?sig=<n>``, a fresh signature per call);
* ``GET /thumbs/<image_id>.jpg?sig=<n>`` -> a small JPEG (no token needed, like the CDN).

Graph requests need ``Authorization: OAuth <token>``, tile requests the ``access_token`` parameter; otherwise the
answer is HTTP 401 with the real code-190 body or, with ``auth_error_style="oauth400"``, HTTP 400 with an
``OAuthException`` / code 190 body. :data:`RATE_LIMIT_BODY` is the real code-4 body (served with HTTP 429).

Faults for tests: :meth:`MapillaryServer.inject` queues canned responses for a path (429 + Retry-After, 500, ...);
``truncate_ids`` serves a cut-off JPEG (with a correct Content-Length); ``bodies`` serves given bytes (a real JPEG)
for an image instead of the generated one; ``expire_first_url`` makes the first signature issued for an image
expire (CDN 403). Every request is logged (:attr:`MapillaryServer.log`) so tests can count exactly what was asked.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import mapbox_vector_tile
import numpy as np
from PIL import Image

from ugdata_pipeline.imagery.coverage_tiles import TILE_ZOOM

FIXTURES = Path(__file__).parent / "mapillary_fixtures"
#: The real bodies: invalid token (code 190, HTTP 401) and rate limit (code 4, HTTP 429).
INVALID_OAUTH_BODY: dict[str, Any] = json.loads((FIXTURES / "errors" / "invalid_oauth_code190.json").read_text())
RATE_LIMIT_BODY: dict[str, Any] = json.loads((FIXTURES / "errors" / "rate_limit_code4.json").read_text())
TILE_PREFIX = "/maps/vtp/mly1_public/2"
OAUTH_ERROR_BODY = {
    "error": {
        "message": "Invalid OAuth access token - Cannot parse access token",
        "type": "OAuthException",
        "code": 190,
        "fbtrace_id": "AbCdEfG",
    }
}
THUMB_FIELDS = ("thumb_256_url", "thumb_1024_url", "thumb_2048_url", "thumb_original_url")


@dataclass(frozen=True)
class FakeImage:
    """One image held by the server; ``captured_at_ms`` is epoch milliseconds like the real API."""

    image_id: str
    lon: float
    lat: float
    compass_angle: float | None = 90.0
    captured_at_ms: int = 1_600_000_000_000
    sequence: str = "seq0"
    is_pano: bool = False
    creator: str = "alice"
    organization_id: str = ""

    def as_json(self, fields: list[str]) -> dict[str, Any]:
        full: dict[str, Any] = {
            "id": self.image_id,
            "geometry": {"type": "Point", "coordinates": [self.lon, self.lat]},
            # SfM moves the camera a little; a test can tell which position was used.
            "computed_geometry": {"type": "Point", "coordinates": [self.lon + 1e-6, self.lat + 1e-6]},
            "compass_angle": self.compass_angle,
            "computed_compass_angle": None if self.compass_angle is None else (self.compass_angle + 1.0) % 360,
            "captured_at": self.captured_at_ms,
            "sequence": self.sequence,
            "is_pano": self.is_pano,
            "creator": {"username": self.creator, "id": f"u-{self.creator}"},
        }
        record = {"id": self.image_id}
        record.update({name: full[name] for name in fields if name in full and full[name] is not None})
        return record

    def tile_feature(self, x: int, y: int) -> dict[str, Any] | None:
        """The point of this image in z14 tile ``x``/``y`` (pixel coordinates, extent 4096, y down), or None."""
        n = 2**TILE_ZOOM
        gx = (self.lon + 180.0) / 360.0 * n
        gy = (1.0 - np.log(np.tan(np.pi / 4 + np.radians(self.lat) / 2)) / np.pi) / 2.0 * n
        px, py = int(np.floor((gx - x) * 4096)), int(np.floor((gy - y) * 4096))
        if not (0 <= px < 4096 and 0 <= py < 4096):
            return None
        properties: dict[str, Any] = {
            "id": int(self.image_id) if self.image_id.isdigit() else self.image_id,
            "captured_at": self.captured_at_ms,
            "sequence_id": self.sequence,
            "organization_id": self.organization_id,
            "is_pano": self.is_pano,
        }
        if self.compass_angle is not None:
            properties["compass_angle"] = float(self.compass_angle)
        return {"geometry": f"POINT({px} {py})", "properties": properties}


@dataclass(frozen=True)
class Fault:
    """
    A canned response: status, JSON (dict) or raw (bytes) body, extra headers; ``delay_s`` holds the answer back
    (a server that hangs past the client's timeout), ``cut_at`` announces the whole body's Content-Length but sends
    only its first ``cut_at`` bytes and closes the connection (a response dropped mid-body).
    """

    status: int
    body: dict[str, Any] | bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    cut_at: int | None = None


@dataclass(frozen=True)
class LoggedRequest:
    path: str
    query: dict[str, str]
    authorization: str | None
    at: float


def jpeg_bytes(image_id: str, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small JPEG whose colour depends on the image id (so images differ)."""
    digest = hashlib.sha1(image_id.encode()).digest()
    buffer = io.BytesIO()
    Image.new("RGB", size, tuple(digest[:3])).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


class MapillaryServer:
    """
    The loopback Mapillary server; use as a context manager (``with MapillaryServer(images) as server``).

    Parameters
    ----------
    images
        Images the server holds.
    token
        The token it accepts (``Authorization: OAuth <token>``, or ``access_token=<token>`` for tiles).
    latency_s
        Sleep before every answer, in seconds (threads: other requests are not held up).
    auth_error_style
        ``"401"`` (HTTP 401) or ``"oauth400"`` (HTTP 400 with an ``OAuthException`` / code 190 body).
    thumb_size
        Pixel size of the served JPEGs.
    """

    def __init__(
        self,
        images: list[FakeImage] | tuple[FakeImage, ...] = (),
        *,
        token: str = "MLY|1234|test-secret",
        latency_s: float = 0.0,
        auth_error_style: str = "401",
        thumb_size: tuple[int, int] = (64, 48),
    ) -> None:
        self.images = {image.image_id: image for image in images}
        self.token = token
        self.latency_s = latency_s
        self.auth_error_style = auth_error_style
        self.thumb_size = thumb_size
        #: Real tile bodies served for ``(x, y)`` instead of a tile encoded from :attr:`images`.
        self.tile_files: dict[tuple[int, int], bytes] = {}
        self.truncate_ids: set[str] = set()
        self.bodies: dict[str, bytes] = {}
        self.expire_first_url: set[str] = set()
        self.log: list[LoggedRequest] = []
        self._faults: dict[str, deque[Fault]] = {}
        self._expired: set[str] = set()
        self._signatures = 0
        self._jpegs: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> MapillaryServer:
        handler = _make_handler(self)
        httpd = _Server(("127.0.0.1", 0), handler)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> MapillaryServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL (use as ``graph_url``)."""
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def tiles_url(self) -> str:
        """Base URL of the coverage tile set (use as ``tiles_url``)."""
        return f"{self.url}{TILE_PREFIX}"

    # ---------------------------------------------------------------- test controls
    def inject(self, path: str, *faults: Fault) -> None:
        """Answer the next requests to ``path`` (e.g. :func:`tile_path`, ``/123``, ``/thumbs/123.jpg``) with
        ``faults``."""
        with self._lock:
            self._faults.setdefault(path, deque()).extend(faults)

    def count(self, path: str) -> int:
        """Requests received for exactly ``path`` (faulted ones included)."""
        with self._lock:
            return sum(1 for request in self.log if request.path == path)

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(request.path for request in self.log)

    def requests_to(self, path: str) -> list[LoggedRequest]:
        with self._lock:
            return [request for request in self.log if request.path == path]

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    # ---------------------------------------------------------------- request handling
    def tile_requests(self) -> list[LoggedRequest]:
        with self._lock:
            return [request for request in self.log if request.path.startswith(TILE_PREFIX)]

    def handle(self, path: str, query: dict[str, str], authorization: str | None) -> tuple[int, bytes, dict[str, str]]:
        with self._lock:
            self.log.append(LoggedRequest(path, query, authorization, time.monotonic()))
            queued = self._faults.get(path)
            fault = queued.popleft() if queued else None
        if self.latency_s:
            time.sleep(self.latency_s)
        if fault is not None:
            time.sleep(fault.delay_s)
            body = fault.body if isinstance(fault.body, bytes) else json.dumps(fault.body).encode()
            cut = {_CUT_HEADER: str(fault.cut_at)} if fault.cut_at is not None else {}
            return fault.status, body, {"Content-Type": "application/json", **fault.headers, **cut}
        if path.startswith("/thumbs/"):
            return self._thumbnail(path, query)
        is_tile = path.startswith(TILE_PREFIX + "/")
        given = query.get("access_token") if is_tile else authorization
        if given != (self.token if is_tile else f"OAuth {self.token}"):
            if self.auth_error_style == "oauth400":
                return _json(400, OAUTH_ERROR_BODY)
            return _json(401, INVALID_OAUTH_BODY)
        if is_tile:
            return self._tile(path.removeprefix(TILE_PREFIX + "/"))
        return self._entity(path.lstrip("/"), query)

    def _tile(self, address: str) -> tuple[int, bytes, dict[str, str]]:
        try:
            z, x, y = (int(part) for part in address.split("/"))
        except ValueError:
            return _json(400, {"error": {"message": "Invalid tile address", "type": "MLYApiException", "code": 100}})
        if z != TILE_ZOOM:
            return _json(400, {"error": {"message": "Unsupported zoom", "type": "MLYApiException", "code": 100}})
        body = self.tile_files.get((x, y))
        if body is None:
            features = [f for image in self.images.values() if (f := image.tile_feature(x, y)) is not None]
            body = mapbox_vector_tile.encode(
                [{"name": "image", "features": features}], default_options={"y_coord_down": True}
            )
        return 200, body, {"Content-Type": "application/x-protobuf"}

    def _entity(self, image_id: str, query: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        if image_id not in self.images:
            return _json(
                404,
                {
                    "error": {
                        "message": f"Unsupported get request. Object {image_id} does not exist",
                        "type": "GraphMethodException",
                        "code": 100,
                    }
                },
            )
        fields = query.get("fields", "id").split(",")
        record = self.images[image_id].as_json(fields)
        for name in fields:
            if name in THUMB_FIELDS:
                with self._lock:
                    self._signatures += 1
                    signature = f"s{self._signatures}"
                    if image_id in self.expire_first_url:
                        self.expire_first_url.discard(image_id)
                        self._expired.add(signature)
                record[name] = f"{self.url}/thumbs/{image_id}.jpg?sig={signature}"
        return _json(200, record)

    def _thumbnail(self, path: str, query: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        image_id = path.removeprefix("/thumbs/").removesuffix(".jpg")
        if image_id not in self.images:
            return 404, b"not found", {"Content-Type": "text/plain"}
        if query.get("sig") in self._expired or "sig" not in query:
            return 403, b"URL signature expired", {"Content-Type": "text/plain"}
        with self._lock:
            if image_id not in self._jpegs:
                self._jpegs[image_id] = jpeg_bytes(image_id, self.thumb_size)
            content = self.bodies.get(image_id, self._jpegs[image_id])
        if image_id in self.truncate_ids:
            content = content[: len(content) // 2]
        return 200, content, {"Content-Type": "image/jpeg"}


def tile_path(x: int, y: int) -> str:
    """The server path of z14 tile ``x``/``y``."""
    return f"{TILE_PREFIX}/{TILE_ZOOM}/{x}/{y}"


def fixture_tile(x: int, y: int) -> bytes:
    """The body of a real z14 coverage tile copied into ``mapillary_fixtures/``."""
    return (FIXTURES / "coverage_tiles" / str(TILE_ZOOM) / str(x) / f"{y}.mvt").read_bytes()


def _json(status: int, body: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
    return status, json.dumps(body).encode(), {"Content-Type": "application/json"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops SYNs under 32 concurrent connects (1 s stalls)
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that was cancelled mid-request (the kill-and-resume test) closes its socket: not an error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


_CUT_HEADER = "X-Test-Cut-At"  # internal: never sent, tells the handler where to hang up


def _make_handler(server: MapillaryServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real API
        # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed ACK
        # (~40 ms per response on Linux), which would swamp the latency being simulated.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
            status, body, headers = server.handle(parts.path, query, self.headers.get("Authorization"))
            cut = headers.pop(_CUT_HEADER, None)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if cut is None:
                self.wfile.write(body)
                return
            self.wfile.write(body[: int(cut)])  # then hang up mid-body
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            return  # silence the per-request log on stderr

    return Handler
