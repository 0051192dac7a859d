"""Caption faults never pass as success: malformed answers, the circuit breaker, the failed-share rule (issue 13)."""

from __future__ import annotations

import logging

import pandas as pd

from ugdata_pipeline_tests.context_tests.chat_server import ChatServer, non_json, ok, raw_json
from ugdata_pipeline_tests.context_tests.test_captioners import SECRET, fast_captioner, make_requests


def _completion(message: object) -> dict[str, object]:
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "test-vlm",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}  # fmt: skip


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
        frame = fast_captioner(server.base_url).caption_all(requests, cache_dir=cache)
        by_id = frame.set_index("image_id")
        assert by_id["status"].to_dict() == {
            "html": "failed", "plain": "done", "nochoices": "failed", "emptychoices": "done", "nomessage": "failed",
            "strchoices": "failed", "nullcontent": "failed", "notjson": "failed", "fine": "done",
        }  # fmt: skip
        # unreadable bodies are retried like any transient fault (3 attempts); an empty answer is re-asked once
        assert by_id["attempts"].to_dict() == {
            "html": 3, "plain": 2, "nochoices": 3, "emptychoices": 2, "nomessage": 3, "strchoices": 3,
            "nullcontent": 2, "notjson": 3, "fine": 1,
        }  # fmt: skip
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
    pd.testing.assert_series_equal(again.set_index("image_id").loc[["fine", "plain"], "image_caption"],
                                   by_id.loc[["fine", "plain"], "image_caption"])  # fmt: skip
