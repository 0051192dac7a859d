"""A loopback server speaking OpenAI chat completions, with scripted faults, for captioner tests and benchmarks.

It runs an asyncio HTTP/1.1 server (keep-alive, Content-Length bodies) on 127.0.0.1 in a background thread, so
sleeping replies (latency, hangs) cost no threads and hundreds of requests per second are cheap.

Each request names its image through a tag ``[img:<tag>]`` that the test puts into the description (and so into
the prompt). A *script* ``(tag, call_number, request_json) -> Reply`` decides what each call gets; every call is
recorded in :attr:`ChatServer.calls`.

A call whose reply is delayed and whose client closes the connection before the reply is due is recorded in
:attr:`ChatServer.abandoned`: so a test tells a client that gave up at its timeout from one that waited the hang
out by what the client did, not by wall-clock gaps that a loaded machine stretches.

Run standalone (for the benchmark, so server and client do not share a GIL)::

    python -m ugdata_pipeline_tests.context_tests.chat_server --latency 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TAG = re.compile(r"\[img:([\w.-]+)\]")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Reply:
    """What one call gets: an HTTP status, an answer text (200), headers, and a delay before replying."""

    status: int = 200
    content: str | None = None  # None: the default well-formed answer for the tag
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    raw_body: str | None = None  # sent as is instead of a chat completion (a broken proxy, an HTML error page)
    content_type: str = "application/json"


def ok(delay_s: float = 0.0) -> Reply:
    return Reply(200, None, delay_s)


def rate_limited(retry_after: str = "0.3") -> Reply:
    return Reply(429, None, 0.0, {"Retry-After": retry_after})


def server_error(status: int = 500) -> Reply:
    return Reply(status)


def hang(seconds: float = 120.0) -> Reply:
    """Reply only after ``seconds``: far longer than the client's timeout, so the client gives up first and the
    server records the call in :attr:`ChatServer.abandoned` (a client that waited it out would get a 200)."""
    return Reply(200, None, seconds)


def malformed() -> Reply:
    return Reply(200, "Here is a nice street with some buildings and trees, nothing more to say about it.")


def garbage() -> Reply:
    """A 200 whose body is not JSON at all."""
    return Reply(200, raw_body="<html><body>502 Bad Gateway</body></html>")


def non_json(
    body: str = "<html><body>Service temporarily unavailable</body></html>", content_type: str = "text/html"
) -> Reply:
    """A 200 with a non-JSON content type (a captive portal, a proxy's error page): the client returns a str."""
    return Reply(200, raw_body=body, content_type=content_type)


def raw_json(payload: object) -> Reply:
    """A 200 whose JSON body is ``payload`` as given (not necessarily a chat completion)."""
    return Reply(200, raw_body=json.dumps(payload))


def unauthorized(status: int = 401) -> Reply:
    return Reply(status)


def well_formed_answer(tag: str, *, as_json: bool = False) -> str:
    caption = f"A street view for image {tag}: brick façades, a cafe terrace on the left and tall plane trees."
    summary = f"Image {tag} sits on a busy street of the described network, a short walk from the listed places."
    if as_json:
        return json.dumps({"image_caption": caption, "summarization": summary})
    return f"**Image:** {caption}\n\n**Summarization:** {summary}"


@dataclass(frozen=True)
class Call:
    """One request the server received."""

    tag: str
    number: int  # 1-based call count for this tag
    status: int
    n_messages: int
    reminder: bool  # the request carries the captioner's format reminder (a re-ask)
    json_mode: bool
    authorization: str
    at: float


@dataclass(frozen=True)
class Abandoned:
    """A delayed call whose client closed the connection before the reply was sent."""

    call: Call
    after_s: float  # from the server's receipt of the request to the client's close


Script = Callable[[str, int, dict[str, Any]], Reply]


class ChatServer:
    """Loopback chat-completions server; use as a context manager. ``base_url`` ends in ``/v1``."""

    def __init__(self, script: Script | None = None, *, latency_s: float = 0.0, port: int = 0) -> None:
        self.script: Script = script or (lambda tag, number, body: ok())
        self.latency_s = latency_s
        self.calls: list[Call] = []
        self.abandoned: list[Abandoned] = []
        self._counts: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def calls_for(self, tag: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.tag == tag]

    def abandoned_for(self, tag: str) -> list[Abandoned]:
        with self._lock:
            return [a for a in self.abandoned if a.call.tag == tag]

    def tags_called(self) -> set[str]:
        with self._lock:
            return {c.tag for c in self.calls}

    def __enter__(self) -> ChatServer:
        self._thread = threading.Thread(target=self._run, name="chat-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("chat server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self._port, backlog=1024)
        )
        self._port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()

            async def drain() -> None:
                await asyncio.gather(*tasks, return_exceptions=True)

            loop.run_until_complete(drain())
            loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, payload, extra, delay, content_type, call = self._respond(lines[0], headers, body)
                if delay and await self._closed_within(reader, delay):
                    if call is not None:
                        with self._lock:
                            self.abandoned.append(Abandoned(call, time.monotonic() - call.at))
                    return
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                extra_lines = "".join(f"{k}: {v}\r\n" for k, v in extra.items())
                writer.write(
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(data)}\r\n{extra_lines}\r\n".encode()
                    + data
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:  # server shutting down: end quietly instead of reporting a cancelled task
            return
        finally:
            writer.close()

    @staticmethod
    async def _closed_within(reader: asyncio.StreamReader, delay: float) -> bool:
        """Wait ``delay`` seconds; True as soon as the client closes its end (it gave up on this call)."""
        try:
            # a client waiting for its answer sends nothing more on this connection; b"" is its close
            return await asyncio.wait_for(reader.read(1), delay) == b""
        except TimeoutError:
            return False
        except ConnectionError:
            return True

    def _respond(
        self, request_line: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any] | str, dict[str, str], float, str, Call | None]:
        if "/chat/completions" not in request_line:
            return 404, {"error": {"message": "not found"}}, {}, 0.0, "application/json", None
        request = json.loads(body)
        text = json.dumps(request["messages"])
        match = TAG.search(text)
        tag = match.group(1) if match else "?"
        json_mode = "response_format" in request
        with self._lock:
            self._counts[tag] += 1
            number = self._counts[tag]
        reply = self.script(tag, number, request)
        call = Call(
            tag,
            number,
            reply.status,
            len(request["messages"]),
            "did not follow the required format" in text,
            json_mode,
            headers.get("authorization", ""),
            time.monotonic(),
        )
        with self._lock:
            self.calls.append(call)
        delay = self.latency_s + reply.delay_s
        if reply.status != 200:
            error = {"error": {"message": f"scripted {reply.status}", "type": "test"}}
            return reply.status, error, reply.headers, delay, "application/json", call
        if reply.raw_body is not None:
            return 200, reply.raw_body, reply.headers, delay, reply.content_type, call
        content = reply.content if reply.content is not None else well_formed_answer(tag, as_json=json_mode)
        payload = {
            "id": f"chatcmpl-{tag}-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "test"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
        }
        return 200, payload, reply.headers, delay, reply.content_type, call


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds before each reply")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with ChatServer(latency_s=args.latency, port=args.port) as server:
        sys.stdout.write(f"{server.base_url}\n")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            sys.stdin.read()  # serve until the parent closes our stdin


if __name__ == "__main__":
    main()
