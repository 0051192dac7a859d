"""The online captioner: any OpenAI-compatible chat-completions endpoint, with its persistent caption cache.

:class:`OpenAICompatibleCaptioner` talks to any chat-completions endpoint (OpenAI, vLLM, DashScope/Qwen, Ollama)
through the ``openai`` async client. Unlike the reference (strictly sequential, a fixed 6 s sleep, no retries,
failures never retried), it runs a bounded pool of workers under a requests/min and a tokens/min token bucket,
retries 429 (honouring ``Retry-After``), 5xx, timeouts and connection errors with exponential backoff and jitter,
re-asks once when the answer lacks the two sections, and keeps a persistent cache keyed by (image bytes, prompt
hash, model): a finished image is never paid for twice, a failed one is retried on the next run with its attempts
carried over. Any answer that is not a usable chat completion is a per-image failure with its reason, never a
crash, and a circuit breaker stops sending to an endpoint that keeps failing (or rejects the key), recording the
images left as ``circuit open``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ugdata_pipeline.atomic_files import write_text_atomic
from ugdata_pipeline.context.caption_prompt import (
    ANSWER_JSON_SCHEMA,
    FORMAT_REMINDER,
    FORMAT_REMINDER_JSON,
    SYSTEM_MESSAGE,
    build_prompt,
    parse_answer,
    prompt_hash,
)
from ugdata_pipeline.context.captioners import CaptionRequest, CaptionRunStats, captions_frame, validate_requests
from ugdata_pipeline.errors import CaptionerConfigError, CaptionFormatError
from ugdata_pipeline.throttle import AsyncTokenBucket, CircuitBreaker, RetryPolicy, parse_retry_after, redact

logger = logging.getLogger(__name__)

__all__ = ["CIRCUIT_OPEN", "IMAGE_TOKEN_ESTIMATE", "OpenAICompatibleCaptioner"]

#: Rough token cost of one image for the tokens/min budget (OpenAI's high-detail 512 px tile is 765 tokens).
IMAGE_TOKEN_ESTIMATE = 765
_CHARS_PER_TOKEN = 4

_IMAGE_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
}


# ----------------------------------------------------------------------------------------------- cache


class _CaptionCache:
    """One JSON file per (image bytes, prompt hash, model): ``<key>.json`` for done, ``<key>.failed.json`` else."""

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root) if root is not None else None

    @staticmethod
    def key(image_sha256: str, prompt_digest: str, model: str) -> str:
        return hashlib.sha256(f"{image_sha256}\n{prompt_digest}\n{model}".encode()).hexdigest()

    def _path(self, key: str, suffix: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}{suffix}"

    def _read(self, key: str, suffix: str) -> dict[str, Any] | None:
        if self.root is None:
            return None
        path = self._path(key, suffix)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            # A torn or corrupt entry is treated as absent: the image is captioned again.
            logger.warning("ignoring unreadable caption cache entry %s", path)
            return None

    def done(self, key: str) -> dict[str, Any] | None:
        return self._read(key, ".json")

    def failed(self, key: str) -> dict[str, Any] | None:
        return self._read(key, ".failed.json")

    def save(self, key: str, row: dict[str, Any]) -> None:
        if self.root is None:
            return
        if row["status"] == "done":
            write_text_atomic(self._path(key, ".json"), json.dumps(row, ensure_ascii=False))
            self._path(key, ".failed.json").unlink(missing_ok=True)
        else:
            write_text_atomic(self._path(key, ".failed.json"), json.dumps(row, ensure_ascii=False))


# ----------------------------------------------------------------------------------------------- online captioner

_RETRYABLE_STATUS = frozenset({408, 409, 429})
#: The reason of the rows an open circuit breaker stopped before their first call (see ``breaker_threshold``).
CIRCUIT_OPEN = "circuit open"


# Private control flow: caught in this module and recorded as a failed caption (never raised to callers), so it stays
# here rather than in errors.py.
class _UnreadableAnswerError(Exception):
    """A 200 answer that is not a chat completion with a message (a proxy's page, a truncated or foreign body)."""


def _answer_text(response: object) -> str | None:
    """The first choice's message text of a chat completion; anything else raises :class:`_UnreadableAnswerError`.

    The client returns the body as a ``str`` when the content type is not JSON, and builds a completion without
    validation from any JSON object, so every field is checked here rather than trusted.
    """
    if isinstance(response, str):
        msg = f"the body is not a chat completion (text {response.strip()[:80]!r})"
        raise _UnreadableAnswerError(msg)
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list) or not choices:
        msg = "the answer has no choices"
        raise _UnreadableAnswerError(msg)
    message = getattr(choices[0], "message", None)
    if message is None:
        msg = "the answer's first choice has no message"
        raise _UnreadableAnswerError(msg)
    content = getattr(message, "content", None)
    if content is not None and not isinstance(content, str):
        msg = f"the answer's message content is {type(content).__name__}, not text"
        raise _UnreadableAnswerError(msg)
    return content  # None or "" is an empty answer: a format fault, re-asked once


def _usage(response: object) -> tuple[int, int]:
    """``(prompt_tokens, completion_tokens)`` of an answer; 0 where the endpoint reports none or nonsense."""
    usage = getattr(response, "usage", None)

    def count(name: str) -> int:
        value = getattr(usage, name, None)
        return value if isinstance(value, int) and value >= 0 else 0

    return count("prompt_tokens"), count("completion_tokens")


@dataclass
class _Job:
    request: CaptionRequest
    prompt: str
    prompt_digest: str
    key: str
    prior_attempts: int

    def data_url(self) -> str:
        """The image as a base64 data URL, read when the request is sent (never all images at once)."""
        mime = _IMAGE_MIME.get(self.request.image_path.suffix.lower(), "image/png")
        return f"data:{mime};base64,{base64.b64encode(self.request.image_path.read_bytes()).decode('ascii')}"


@dataclass
class _Run:
    """State shared by the workers of one ``caption_all`` run (bound to its event loop)."""

    client: Any
    openai: Any
    request_bucket: AsyncTokenBucket | None
    token_bucket: AsyncTokenBucket | None
    stats: CaptionRunStats
    breaker: CircuitBreaker
    opened: asyncio.Event = field(default_factory=asyncio.Event)


class OpenAICompatibleCaptioner:
    """
    Captions through an OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, DashScope/Qwen, Ollama).

    Parameters
    ----------
    model
        Model name sent to the endpoint (e.g. ``"qwen-vl-max-latest"``, ``"gpt-4.1-mini"``).
    base_url
        Endpoint base URL (``.../v1``); default the environment variable ``OPENAI_BASE_URL``, else OpenAI's.
    api_key
        API key; default the environment variable ``OPENAI_API_KEY``. Local servers that need none accept any
        value (set ``OPENAI_API_KEY=EMPTY``). Never logged nor written to errors.
    concurrency
        Requests in flight at once (workers).
    requests_per_minute, tokens_per_minute
        Token-bucket limits; tokens count the prompt estimate plus ``max_tokens`` (what providers reserve).
        ``None``: no limit of that kind.
    max_attempts
        API calls per image per run, the format re-ask included.
    timeout_s
        Seconds before one call is abandoned (then retried).
    json_schema
        Ask for a JSON object through ``response_format`` (endpoints with structured output) instead of
        marked sections.
    temperature, max_tokens
        Sampling settings (the reference used 0.2 and 1300).
    retry_policy
        Backoff timing; default :class:`~ugdata_pipeline.throttle.RetryPolicy` with ``max_attempts``.
    breaker_threshold
        Failed calls in a row (connection errors, timeouts, 5xx, 404, unreadable or malformed answers) after which
        the endpoint is taken to be down: nothing more is sent, and the images left are recorded as failed with
        reason ``circuit open`` (not attempted) so the run ends quickly. A 401/403 opens it at once. Default
        ``max(10, 2 * concurrency)``, the rule of the Mapillary client. 429s neither count nor reset it.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        concurrency: int = 16,
        requests_per_minute: float | None = 600.0,
        tokens_per_minute: float | None = None,
        max_attempts: int = 5,
        timeout_s: float = 60.0,
        json_schema: bool = False,
        temperature: float = 0.2,
        max_tokens: int = 1300,
        retry_policy: RetryPolicy | None = None,
        breaker_threshold: int | None = None,
    ) -> None:
        if not model or not str(model).strip():
            msg = "`model` must name the endpoint's model, e.g. 'qwen-vl-max-latest'"
            raise CaptionerConfigError(msg)
        if concurrency < 1:
            msg = f"`concurrency` must be >= 1, got {concurrency!r}"
            raise CaptionerConfigError(msg)
        for name, value in (("requests_per_minute", requests_per_minute), ("tokens_per_minute", tokens_per_minute)):
            if value is not None and value <= 0:
                msg = f"`{name}` must be positive or None (no limit), got {value!r}"
                raise CaptionerConfigError(msg)
        if timeout_s <= 0:
            msg = f"`timeout_s` must be positive, got {timeout_s!r}"
            raise CaptionerConfigError(msg)
        if breaker_threshold is not None and breaker_threshold < 1:
            msg = f"`breaker_threshold` must be >= 1 or None (the default), got {breaker_threshold!r}"
            raise CaptionerConfigError(msg)
        self.model = str(model)
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not self._api_key:
            msg = (
                "no API key for the captioner: set the environment variable OPENAI_API_KEY (any value, e.g. "
                "EMPTY, for local servers such as vLLM or Ollama) or pass api_key"
            )
            raise CaptionerConfigError(msg)
        self.concurrency = int(concurrency)
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.timeout_s = float(timeout_s)
        self.json_schema = bool(json_schema)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.retry_policy = retry_policy or RetryPolicy(max_attempts=max_attempts)
        self.max_attempts = self.retry_policy.max_attempts
        # Enough that every worker can fail twice in a row before the endpoint is declared down (a burst of
        # errors while a server restarts), few enough that a dead endpoint costs seconds, not the whole city.
        self.breaker_threshold = int(breaker_threshold or max(10, 2 * self.concurrency))
        self.last_stats = CaptionRunStats()

    def __repr__(self) -> str:  # the key stays out of reprs and logs
        return f"OpenAICompatibleCaptioner(model={self.model!r}, base_url={self.base_url!r})"

    # -- public ----------------------------------------------------------------------------------------

    def caption_all(
        self,
        requests: Sequence[CaptionRequest],
        *,
        cache_dir: Path | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> pd.DataFrame:
        """
        Caption every request, reusing the cache; returns the ``captions`` table (request order).

        Finished images are written to ``cache_dir`` one by one as they complete, so a killed run loses no
        finished work and a rerun calls the endpoint only for images not yet done (failed ones included).

        Parameters
        ----------
        requests
            Images to caption (unique ``image_id``; files must exist).
        cache_dir
            Persistent cache folder; ``None`` keeps nothing between runs.
        progress
            Called with ``(finished, total)`` after each image.
        """
        return asyncio.run(self.acaption_all(requests, cache_dir=cache_dir, progress=progress))

    async def acaption_all(
        self,
        requests: Sequence[CaptionRequest],
        *,
        cache_dir: Path | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> pd.DataFrame:
        """Async form of :meth:`caption_all`, for callers that already run an event loop."""
        import openai  # deferred: the template deployment never needs the client

        requests = list(requests)
        validate_requests(requests, need_files=True)
        started = time.perf_counter()
        stats = CaptionRunStats(requested=len(requests))
        self.last_stats = stats
        cache = _CaptionCache(cache_dir)
        results: dict[str, dict[str, Any]] = {}
        jobs: list[_Job] = []
        for request in requests:
            job = self._job(request, cache)
            cached = cache.done(job.key)
            if cached is not None:
                cached = {**cached, "image_id": request.image_id}
                results[request.image_id] = cached
                stats.cache_hits += 1
            else:
                jobs.append(job)
        total, finished = len(requests), len(results)
        if progress is not None and finished:
            progress(finished, total)
        logger.info(
            "captioning %d image(s) with %s: %d from cache, %d to request",
            total,
            self.model,
            stats.cache_hits,
            len(jobs),
        )

        request_bucket = AsyncTokenBucket(self.requests_per_minute / 60.0) if self.requests_per_minute else None
        token_bucket = (
            AsyncTokenBucket(self.tokens_per_minute / 60.0, capacity=self.tokens_per_minute / 6.0)
            if self.tokens_per_minute
            else None
        )
        queue: asyncio.Queue[_Job] = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)

        client = openai.AsyncOpenAI(
            api_key=self._api_key, base_url=self.base_url, max_retries=0, timeout=self.timeout_s
        )
        run = _Run(client, openai, request_bucket, token_bucket, stats, CircuitBreaker(self.breaker_threshold))

        async def worker() -> None:
            nonlocal finished
            while True:
                try:
                    job = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                row = await self._caption_one(run, job)
                cache.save(job.key, row)
                results[job.request.image_id] = row
                finished += 1
                if progress is not None:
                    progress(finished, total)

        try:
            workers = [asyncio.create_task(worker()) for _ in range(min(self.concurrency, max(1, len(jobs))))]
            await asyncio.gather(*workers)
        finally:
            await client.close()
        rows = [results[r.image_id] for r in requests]
        frame = captions_frame(rows)
        stats.done = int((frame["status"] == "done").sum())
        stats.failed = int((frame["status"] == "failed").sum())
        stats.wall_s = round(time.perf_counter() - started, 3)
        logger.info(
            "captioning finished: %d done, %d failed (%d not attempted: circuit open), %d API calls, "
            "%d retries, %d re-asks in %.1f s",
            stats.done,
            stats.failed,
            stats.not_attempted,
            stats.api_calls,
            stats.retries,
            stats.reasks,
            stats.wall_s,
        )
        return frame

    # -- internals -------------------------------------------------------------------------------------

    def _job(self, request: CaptionRequest, cache: _CaptionCache) -> _Job:
        image_sha256 = hashlib.sha256(request.image_path.read_bytes()).hexdigest()
        prompt = build_prompt(request.description, json_schema=self.json_schema)
        digest = prompt_hash(prompt)
        key = _CaptionCache.key(image_sha256, digest, self.model)
        failed = cache.failed(key)
        prior = int(failed.get("attempts", 0)) if failed else 0
        return _Job(request, prompt, digest, key, prior)

    def _estimated_tokens(self, prompt: str) -> float:
        return len(prompt) / _CHARS_PER_TOKEN + IMAGE_TOKEN_ESTIMATE + self.max_tokens

    async def _caption_one(self, run: _Run, job: _Job) -> dict[str, Any]:
        openai = run.openai
        chat_completion_type = openai.types.chat.ChatCompletion
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": SYSTEM_MESSAGE},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": job.data_url()}},
                    {"type": "text", "text": job.prompt},
                ],
            },
        ]
        extra: dict[str, Any] = {}
        if self.json_schema:
            extra["response_format"] = {"type": "json_schema", "json_schema": ANSWER_JSON_SCHEMA}
        attempts = prompt_tokens = completion_tokens = 0
        reasked = False
        error = ""
        image_id = job.request.image_id
        stats = run.stats
        while attempts < self.max_attempts:
            if request_bucket := run.request_bucket:
                await request_bucket.acquire(1)
            if token_bucket := run.token_bucket:
                await token_bucket.acquire(self._estimated_tokens(job.prompt))
            if run.breaker.is_open:  # checked after the buckets too: a worker may have waited there a while
                return self._stopped(run, job, attempts, error, prompt_tokens, completion_tokens)
            attempts += 1
            stats.api_calls += 1
            retry_after: float | None = None
            text: str | None = None
            try:
                # The client's documented raw ``post`` skips its recursive parameter transform (about 3 ms of
                # CPU per call, a third of the client's cost at 100 calls/s); errors and parsing are unchanged.
                response = await run.client.post(
                    "/chat/completions",
                    cast_to=chat_completion_type,
                    body={
                        "model": self.model,
                        "messages": messages,
                        "temperature": self.temperature,
                        "max_tokens": self.max_tokens,
                        **extra,
                    },
                )
            except openai.APIStatusError as exc:
                status = exc.status_code
                error = f"HTTP {status}: {self._safe(exc)}"
                if status in (401, 403):
                    # A wrong or expired key will not get better by asking again, for this image or any other.
                    error += "; the endpoint rejected the API key: check OPENAI_API_KEY (and OPENAI_BASE_URL)"
                    self._open(run, run.breaker.trip(error))
                    break
                # The endpoint's own faults count; a rate limit is the service working as agreed, and a 400/422
                # is about this one request.
                if status >= 500 or status in (404, 408):
                    self._open(run, run.breaker.failure(error))
                if status not in _RETRYABLE_STATUS and status < 500:
                    logger.warning("caption %s: %s (not retryable)", image_id, error)
                    break
                retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
            except openai.APITimeoutError:
                error = f"timeout: no answer within {self.timeout_s:g} s"
                self._open(run, run.breaker.failure(error))
            except openai.APIConnectionError as exc:
                error = f"connection error: {self._safe(exc)}"
                self._open(run, run.breaker.failure(error))
            except (openai.APIError, ValueError, TypeError) as exc:  # e.g. JSON content type, body not JSON
                error = f"unreadable response: {type(exc).__name__}: {self._safe(exc)}"
                self._open(run, run.breaker.failure(error))
            else:
                used_prompt, used_completion = _usage(response)
                prompt_tokens += used_prompt
                completion_tokens += used_completion
                try:
                    text = _answer_text(response)
                    caption, summary = parse_answer(text)
                except _UnreadableAnswerError as exc:
                    error = f"unreadable response: {redact(str(exc), self._api_key)}"
                    self._open(run, run.breaker.failure(error))
                except CaptionFormatError as exc:
                    error = f"malformed answer: {exc}"
                    self._open(run, run.breaker.failure(error))
                    if reasked:
                        break
                    # One re-ask in the same conversation, with the model's own answer and a format reminder.
                    reasked = True
                    stats.reasks += 1
                    messages = [
                        *messages,
                        {"role": "assistant", "content": text or ""},
                        {"role": "user", "content": FORMAT_REMINDER_JSON if self.json_schema else FORMAT_REMINDER},
                    ]
                    logger.info("caption %s: %s; re-asking once", image_id, exc)
                    continue
                else:
                    run.breaker.success()
                    stats.prompt_tokens += prompt_tokens
                    stats.completion_tokens += completion_tokens
                    return self._row(job, caption, summary, "done", attempts, "", prompt_tokens, completion_tokens)
            if attempts >= self.max_attempts or run.breaker.is_open:
                break
            delay = self.retry_policy.delay_s(attempts, retry_after)
            stats.retries += 1
            logger.info("caption %s: attempt %d failed (%s); retrying in %.2f s", image_id, attempts, error, delay)
            # The wait ends early when the breaker opens meanwhile, so a dead endpoint does not cost a full backoff.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.opened.wait(), delay)
        stats.prompt_tokens += prompt_tokens
        stats.completion_tokens += completion_tokens
        logger.warning("caption %s failed after %d attempt(s): %s", image_id, attempts, error)
        return self._row(job, None, None, "failed", attempts, error, prompt_tokens, completion_tokens)

    @staticmethod
    def _open(run: _Run, opened: bool) -> None:
        """Once, when the breaker has just opened: say so and wake the workers waiting out a backoff."""
        if opened:
            logger.error(
                "captioning stopped: the endpoint looks down (%s); the images left are recorded as failed "
                "('circuit open') and retried by the next run",
                run.breaker.reason,
            )
            run.opened.set()

    def _stopped(
        self, run: _Run, job: _Job, attempts: int, error: str, prompt_tokens: int, completion_tokens: int
    ) -> dict[str, Any]:
        """The row of an image the open breaker stopped: its own last error, or ``circuit open`` if never tried."""
        run.stats.prompt_tokens += prompt_tokens
        run.stats.completion_tokens += completion_tokens
        if attempts == 0:
            run.stats.not_attempted += 1
            error = f"{CIRCUIT_OPEN}: not attempted, the endpoint looks down ({run.breaker.reason})"
        return self._row(job, None, None, "failed", attempts, error, prompt_tokens, completion_tokens)

    def _safe(self, exc: BaseException) -> str:
        return redact(str(exc), self._api_key)[:300]

    def _row(
        self,
        job: _Job,
        caption: str | None,
        summary: str | None,
        status: str,
        attempts: int,
        error: str,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> dict[str, Any]:
        return {
            "image_id": job.request.image_id,
            "model": self.model,
            "prompt_hash": job.prompt_digest,
            "image_caption": caption,
            "summarization": summary,
            "status": status,
            "attempts": job.prior_attempts + attempts,
            "error": redact(error, self._api_key),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
        }
