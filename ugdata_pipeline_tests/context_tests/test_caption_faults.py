"""Caption faults never pass as success: malformed answers, the circuit breaker, the failed-share rule (issue 13)."""

from __future__ import annotations

import logging
import os
import stat

import pandas as pd
import pytest

from ugdata_pipeline.context.caption_quality import (
    caption_failure_table,
    failed_share_limit,
    failure_reason,
    require_complete,
)
from ugdata_pipeline.context.openai_captioner import CIRCUIT_OPEN
from ugdata_pipeline.errors import CaptionerConfigError, IncompleteResultError
from ugdata_pipeline_tests.context_tests.chat_server import (
    ChatServer,
    hang,
    malformed,
    non_json,
    ok,
    rate_limited,
    raw_json,
    server_error,
    unauthorized,
)
from ugdata_pipeline_tests.context_tests.test_captioners import SECRET, fast_captioner, make_requests


def _completion(message: object) -> dict[str, object]:
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "test-vlm",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    }


def scripted(plan: dict[str, list]):
    """A script that gives each tag its replies in order (the last one repeats), ``ok()`` for unknown tags."""

    def script(tag, number, body):
        replies = plan.get(tag, [ok()])
        return replies[min(number, len(replies)) - 1]

    return script


def test_malformed_answers_are_per_image_failures_retried_then_rerun(tmp_path, caplog):
    """Every shape of unusable 200 answer fails its image with a reason; none crashes the run."""
    plan = {
        # a 200 with a text/html or text/plain body: the openai client hands back a str
        "html": [non_json()] * 3,
        "plain": [non_json("upstream busy", "text/plain"), ok()],
        "nochoices": [raw_json({"id": "x", "object": "chat.completion"})] * 3,
        "emptychoices": [raw_json({**_completion(None), "choices": []}), ok()],
        "nomessage": [raw_json(_completion(None))] * 3,
        "strchoices": [raw_json({**_completion(None), "choices": "oops"})] * 3,
        "nullcontent": [raw_json(_completion({"role": "assistant", "content": None}))] * 2,
        "notjson": [raw_json(["not", "an", "object"])] * 3,
        "fine": [ok()],
    }
    requests = make_requests(tmp_path / "images", list(plan))
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="ugdata_pipeline"), ChatServer(scripted(plan)) as server:
        # a threshold out of reach: this test is about each answer's fate, not about the breaker
        frame = fast_captioner(server.base_url, breaker_threshold=100).caption_all(requests, cache_dir=cache)
        by_id = frame.set_index("image_id")
        assert by_id["status"].to_dict() == {
            "html": "failed",
            "plain": "done",
            "nochoices": "failed",
            "emptychoices": "done",
            "nomessage": "failed",
            "strchoices": "failed",
            "nullcontent": "failed",
            "notjson": "failed",
            "fine": "done",
        }
        # unreadable bodies are retried like any transient fault (3 attempts); an empty answer is re-asked once
        assert by_id["attempts"].to_dict() == {
            "html": 3,
            "plain": 2,
            "nochoices": 3,
            "emptychoices": 2,
            "nomessage": 3,
            "strchoices": 3,
            "nullcontent": 2,
            "notjson": 3,
            "fine": 1,
        }
        page = "'<html><body>Service temporarily unavailable</body></html>'"
        assert by_id.loc["html", "error"] == f"unreadable response: the body is not a chat completion (text {page})"
        assert by_id.loc["nochoices", "error"] == "unreadable response: the answer has no choices"
        assert by_id.loc["nomessage", "error"] == "unreadable response: the answer's first choice has no message"
        assert by_id.loc["strchoices", "error"] == "unreadable response: the answer has no choices"
        assert by_id.loc["notjson", "error"].startswith("unreadable response: ")
        assert by_id.loc["nullcontent", "error"] == "malformed answer: the answer is empty"
        assert by_id.loc["plain", "summarization"].startswith("Image plain sits on")
        assert [c.reminder for c in server.calls_for("nullcontent")] == [False, True]
        assert SECRET not in caplog.text
        failed = set(frame.loc[frame["status"] == "failed", "image_id"])
        n_first = len(server.calls)

        # the next run with a healthy endpoint asks only for the failed images, each once
        server.script = lambda tag, number, body: ok()
        again = fast_captioner(server.base_url).caption_all(requests, cache_dir=cache)
        assert sorted(c.tag for c in server.calls[n_first:]) == sorted(failed)
    assert (again["status"] == "done").all()
    assert again.set_index("image_id").loc["html", "attempts"] == 4  # the 3 failed attempts carried over
    pd.testing.assert_series_equal(
        again.set_index("image_id").loc[["fine", "plain"], "image_caption"],
        by_id.loc[["fine", "plain"], "image_caption"],
    )


# ----------------------------------------------------------------------------------------------- circuit breaker

TAGS = [f"p{i:02d}" for i in range(12)]


@pytest.mark.parametrize(
    ("fault", "options", "attempts_of_first_two", "reason"),
    [
        (server_error(500), {}, [3, 1], "HTTP 500: "),
        (server_error(503), {}, [3, 1], "HTTP 503: "),
        (hang(), {"timeout_s": 0.3}, [3, 1], "timeout: no answer within 0.3 s"),
        (non_json(), {}, [3, 1], "unreadable response: the body is not a chat completion"),
        (malformed(), {}, [2, 2], "malformed answer: the answer has no **Summarization:** section"),
    ],
)
def test_breaker_opens_after_n_failed_calls_and_the_rest_is_not_attempted(
    tmp_path, fault, options, attempts_of_first_two, reason
):
    requests = make_requests(tmp_path / "images", TAGS)
    cache = tmp_path / "cache"
    with ChatServer(lambda tag, number, body: fault) as server:
        captioner = fast_captioner(server.base_url, concurrency=1, breaker_threshold=4, **options)
        frame = captioner.caption_all(requests, cache_dir=cache)
        # four failed calls in a row, then nothing more is sent
        assert len(server.calls) == 4
        assert [c.tag for c in server.calls] == ["p00"] * attempts_of_first_two[0] + ["p01"] * (
            4 - attempts_of_first_two[0]
        )
        # a hung call is given up at the client's timeout (abandoned on the server), never waited out
        assert [a.call for a in server.abandoned] == (server.calls if fault.delay_s else [])
        assert (frame["status"] == "failed").all()
        assert frame["attempts"].tolist() == [*attempts_of_first_two, *[0] * 10]
        assert frame.loc[0, "error"].startswith(reason) and frame.loc[1, "error"].startswith(reason)
        stopped = frame.loc[2:, "error"]
        assert stopped.str.startswith(
            f"{CIRCUIT_OPEN}: not attempted, the endpoint looks down (4 calls in a row failed (last: {reason}"
        ).all()
        stats = captioner.last_stats
        assert (stats.api_calls, stats.failed, stats.not_attempted, stats.done) == (4, 12, 10, 0)

        # the next run with a healthy endpoint asks for every image once; attempts carry over
        server.script = lambda tag, number, body: ok()
        again = fast_captioner(server.base_url, concurrency=1, breaker_threshold=4).caption_all(
            requests, cache_dir=cache
        )
        assert sorted(c.tag for c in server.calls[4:]) == TAGS
    assert (again["status"] == "done").all()
    assert again["attempts"].tolist() == [a + 1 for a in [*attempts_of_first_two, *[0] * 10]]


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_key_opens_the_breaker_at_once_and_names_the_variable_not_the_key(tmp_path, caplog, status):
    requests = make_requests(tmp_path / "images", TAGS)
    with (
        caplog.at_level(logging.INFO, logger="ugdata_pipeline"),
        ChatServer(lambda tag, number, body: unauthorized(status)) as server,
    ):
        frame = fast_captioner(server.base_url, concurrency=1).caption_all(requests, cache_dir=tmp_path / "cache")
        assert len(server.calls) == 1  # a wrong key is not retried, for this image or any other
    assert frame["attempts"].tolist() == [1, *[0] * 11]
    assert frame.loc[0, "error"].startswith(f"HTTP {status}: ")
    assert frame.loc[0, "error"].endswith(
        "the endpoint rejected the API key: check OPENAI_API_KEY (and OPENAI_BASE_URL)"
    )
    assert frame.loc[1:, "error"].str.startswith(f"{CIRCUIT_OPEN}: not attempted").all()
    assert frame["error"].str.contains("check OPENAI_API_KEY").all()
    assert "captioning stopped: the endpoint looks down" in caplog.text
    assert SECRET not in caplog.text and not frame["error"].str.contains(SECRET).any()


def test_rate_limits_never_open_the_breaker_and_retry_after_is_honoured(tmp_path):
    tags = TAGS[:6]
    requests = make_requests(tmp_path / "images", tags)
    script = scripted({tag: [rate_limited("0.2"), ok()] for tag in tags})
    with ChatServer(script) as server:
        captioner = fast_captioner(server.base_url, concurrency=2, breaker_threshold=2)
        frame = captioner.caption_all(requests)
        # six 429s, at least three in a row at a threshold of 2: still all done
        assert (frame["status"] == "done").all() and frame["attempts"].tolist() == [2] * 6
        assert len(server.calls) == 12 and captioner.last_stats.not_attempted == 0
        for tag in tags:
            first, second = server.calls_for(tag)
            assert first.status == 429 and second.at - first.at >= 0.2


# ----------------------------------------------------------------------------------------------- failed-share rule


def test_too_many_failures_raise_incomplete_result_and_the_retry_asks_only_for_them(tmp_path):
    requests = make_requests(tmp_path / "images", TAGS)
    cache = tmp_path / "cache"
    # p00 and p01 answer; then the endpoint dies with 500s
    script = scripted({tag: [ok()] if tag in ("p00", "p01") else [server_error(500)] for tag in TAGS})
    with ChatServer(script) as server:
        frame = fast_captioner(server.base_url, concurrency=1, breaker_threshold=4).caption_all(
            requests, cache_dir=cache
        )
        assert frame["status"].tolist() == ["done"] * 2 + ["failed"] * 10
        summary = caption_failure_table(frame)
        assert summary[["reason", "count"]].values.tolist() == [["circuit open", 8], ["HTTP 500", 2]]
        with pytest.raises(IncompleteResultError) as raised:
            require_complete(frame, city="karhula", max_failed_share=0.02)
        last = "HTTP 500: Error code: 500 - scripted 500"
        assert str(raised.value) == (
            f"captions of city 'karhula': 10/12 images failed (83.3%, more than max_failed_share 2.0%): circuit open x "
            f"8, HTTP 500 x 2; e.g. p04: circuit open: not attempted, the endpoint looks down (4 calls in a row failed "
            f"(last: {last})); p02: {last}. The previous captions table is kept. Fix the endpoint, then "
            "re-materialize the `captions` asset for 'karhula': finished captions are cached and not requested "
            "again, only the failed images are."
        )
        n_first = len(server.calls)

        server.script = lambda tag, number, body: ok()
        again = fast_captioner(server.base_url, concurrency=1, breaker_threshold=4).caption_all(
            requests, cache_dir=cache
        )
        assert sorted(c.tag for c in server.calls[n_first:]) == TAGS[2:]  # the two finished ones came from the cache
    require_complete(again, city="karhula", max_failed_share=0.02)  # all done: no error


def _rows(statuses: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(len(statuses))],
            "status": statuses,
            "error": ["" if s == "done" else "HTTP 400: bad image" for s in statuses],
        }
    )


def test_failed_share_threshold_is_inclusive_and_checked():
    require_complete(_rows(["failed"] + ["done"] * 49), city="c", max_failed_share=0.02)  # 2 %: allowed
    with pytest.raises(IncompleteResultError, match=r"captions of city 'c': 2/50 images failed \(4\.0%.*HTTP 400 x 2"):
        require_complete(_rows(["failed"] * 2 + ["done"] * 48), city="c", max_failed_share=0.02)
    require_complete(_rows([]), city="c", max_failed_share=0.0)  # no images: nothing missing
    with pytest.raises(CaptionerConfigError, match=r"captioner.max_failed_share must be a share between 0 and 1"):
        failed_share_limit(1.5)
    assert failed_share_limit(0) == 0.0
    assert [failure_reason(e) for e in ("timeout: no answer within 2 s", "circuit open: x", "", None)] == [
        "timeout",
        "circuit open",
        "unknown",
        "unknown",
    ]


def test_cache_files_follow_the_umask_like_the_tables(tmp_path):
    requests = make_requests(tmp_path / "images", ["u1", "u2"])
    script = scripted({"u2": [server_error(400)]})  # one done entry and one failed record
    previous = os.umask(0o022)
    try:
        with ChatServer(script) as server:
            fast_captioner(server.base_url).caption_all(requests, cache_dir=tmp_path / "cache")
    finally:
        os.umask(previous)
    files = sorted((tmp_path / "cache").glob("*/*.json"))
    assert sorted(f.name.endswith(".failed.json") for f in files) == [False, True]
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o644}
