"""Captioners: retries, re-ask, failure records and resume against a loopback server; template; quality gates."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ugdata_pipeline.context.caption_prompt import build_prompt, parse_answer, prompt_hash
from ugdata_pipeline.context.caption_quality import (
    both_sections_share,
    find_place_mentions,
    hallucination_rate,
    homogeneity,
)
from ugdata_pipeline.context.captioners import (
    CAPTION_COLUMNS,
    Captioner,
    CaptionPlace,
    CaptionRequest,
    TemplateCaptioner,
    build_caption_requests,
)
from ugdata_pipeline.context.openai_captioner import OpenAICompatibleCaptioner
from ugdata_pipeline.errors import CaptionerConfigError, CaptionFormatError, CaptionInputError
from ugdata_pipeline.throttle import RetryPolicy
from ugdata_pipeline_tests.context_tests.chat_server import (
    ChatServer,
    garbage,
    hang,
    malformed,
    ok,
    rate_limited,
    server_error,
)

SECRET = "sk-test-DO-NOT-LEAK-1234567890"
REPO_ROOT = Path(__file__).resolve().parents[2]
DESCRIPTION = "[img:{tag}] The network contains Alpha Street and Cafe Uno."


def make_requests(folder: Path, tags: list[str]) -> list[CaptionRequest]:
    folder.mkdir(parents=True, exist_ok=True)
    requests = []
    for tag in tags:
        path = folder / f"{tag}.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + tag.encode() * 50)  # distinct bytes per image: distinct cache keys
        requests.append(CaptionRequest(tag, path, DESCRIPTION.format(tag=tag)))
    return requests


def fast_captioner(base_url: str, **kwargs) -> OpenAICompatibleCaptioner:
    # A healthy loopback answer takes milliseconds; 30 s never times one out, however loaded the machine. Tests that
    # script a hang pass a shorter timeout and check the abandoned call on the server (ChatServer.abandoned).
    options = {
        "concurrency": 4,
        "requests_per_minute": None,
        "timeout_s": 30.0,
        "retry_policy": RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=2.0),
    }
    options.update(kwargs)
    return OpenAICompatibleCaptioner("test-vlm", base_url=base_url, api_key=SECRET, **options)


# ----------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "answer",
    [
        "**Image:** A wide street with trees on both sides.\n"
        "**Summarization:** The view sits on Alpha Street near a cafe.",
        "## Image\nA wide street with trees on both sides.\n"
        "## Summarization\nThe view sits on Alpha Street near a cafe.",
        "Image: A wide street with trees on both sides.\nSummarization: The view sits on Alpha Street near a cafe.",
        '{"image_caption": "A wide street with trees on both sides.", '
        '"summarization": "The view sits on Alpha Street near a cafe."}',
        '```json\n{"image_caption": "A wide street with trees on both sides.", '
        '"summarization": "The view sits on Alpha Street near a cafe."}\n```',
    ],
)
def test_parse_answer_accepts_marked_sections_headings_and_json(answer):
    caption, summary = parse_answer(answer)
    assert caption == "A wide street with trees on both sides."
    assert summary == "The view sits on Alpha Street near a cafe."


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("A street with trees and some shops along it, quite pleasant overall.", "no .*Summarization.* section"),
        ("**Image:** A wide street with trees on both sides.\n**Summarization:** ok", "fewer than 20"),
        ("", "empty"),
        ('{"image_caption": "A wide street with trees on both sides."}', "lacks the string fields"),
    ],
)
def test_parse_answer_rejects_answers_without_both_sections(answer, reason):
    with pytest.raises(CaptionFormatError, match=reason):
        parse_answer(answer)


_SECTION_TEXT = (
    st.text(
        alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ ,.;'-:0123456789\n"), min_size=20, max_size=300
    )
    .map(str.strip)
    .filter(
        lambda t: (
            len(t) >= 20
            and t[0].isalnum()
            and "summari" not in t.casefold()
            and "caption" not in t.casefold()
            and not t.casefold().startswith("image")
        )
    )
)


@settings(max_examples=60, deadline=None)
@given(caption=_SECTION_TEXT, summary=_SECTION_TEXT, layout=st.sampled_from(["bold", "heading", "plain", "json"]))
def test_parse_answer_round_trips_every_layout(caption, summary, layout):
    text = {
        "bold": f"**Image:** {caption}\n\n**Summarization:** {summary}",
        "heading": f"## Image\n{caption}\n## Summarization\n{summary}",
        "plain": f"Image: {caption}\nSummarization: {summary}",
        "json": json.dumps({"image_caption": caption, "summarization": summary}),
    }[layout]
    assert parse_answer(text) == (caption, summary)


def test_prompt_carries_description_and_both_markers_and_hash_tracks_the_text():
    prompt = build_prompt("This network contains 12 locations.")
    assert "This network contains 12 locations." in prompt
    assert "**Image:**" in prompt and "**Summarization:**" in prompt
    assert prompt_hash(prompt) == prompt_hash(build_prompt("This network contains 12 locations."))
    assert prompt_hash(prompt) != prompt_hash(build_prompt("This network contains 13 locations."))
    assert '"image_caption"' in build_prompt("x", json_schema=True)


# ----------------------------------------------------------------------------------------------- online captioner


TIMEOUT_S = 5.0


def test_retries_reask_and_recorded_failures_then_rerun_retries_only_the_failures(tmp_path, caplog):
    plan = {
        "a": [rate_limited("0.3"), ok()],
        "b": [server_error(500), ok()],
        "c": [hang(), ok()],
        "d": [malformed(), ok()],
        "e": [server_error(503)] * 3,
        "f": [malformed(), malformed()],
        "g": [server_error(400)],
        "h": [ok()],
        "i": [garbage(), ok()],
    }

    def script(tag, number, body):
        replies = plan.get(tag, [ok()])
        return replies[min(number, len(replies)) - 1]

    requests = make_requests(tmp_path / "images", list(plan))
    cache = tmp_path / "cache"
    ticks = []
    with caplog.at_level(logging.DEBUG, logger="ugdata_pipeline"), ChatServer(script) as server:
        # the hang is abandoned at the timeout: 5 s is a wide margin over a healthy answer's milliseconds
        captioner = fast_captioner(server.base_url, timeout_s=TIMEOUT_S)
        first = captioner.caption_all(requests, cache_dir=cache, progress=lambda n, total: ticks.append((n, total)))
        stats = captioner.last_stats

        assert list(first.columns) == list(CAPTION_COLUMNS)
        by_id = first.set_index("image_id")
        assert by_id["status"].to_dict() == {
            "a": "done",
            "b": "done",
            "c": "done",
            "d": "done",
            "e": "failed",
            "f": "failed",
            "g": "failed",
            "h": "done",
            "i": "done",
        }
        assert by_id["attempts"].to_dict() == {"a": 2, "b": 2, "c": 2, "d": 2, "e": 3, "f": 2, "g": 1, "h": 1, "i": 2}
        # ... and the server received exactly those calls
        assert {tag: len(server.calls_for(tag)) for tag in plan} == by_id["attempts"].to_dict()
        assert "unreadable response" in "".join(r.message for r in caplog.records if "caption i" in r.message)
        assert "429" in "".join(r.message for r in caplog.records if "caption a" in r.message)
        assert "HTTP 503" in by_id.loc["e", "error"]
        assert "malformed answer" in by_id.loc["f", "error"] and "Summarization" in by_id.loc["f", "error"]
        assert "HTTP 400" in by_id.loc["g", "error"]  # not retryable: one attempt only
        assert by_id.loc["a", "image_caption"].startswith("A street view for image a")
        assert by_id.loc["a", "summarization"].startswith("Image a sits on")
        assert pd.isna(by_id.loc["e", "image_caption"])
        # token usage: 1000/100 per answered call; d answered twice (malformed, then good)
        assert (by_id.loc["d", "prompt_tokens"], by_id.loc["d", "completion_tokens"]) == (2000, 200)
        assert (by_id.loc["h", "prompt_tokens"], by_id.loc["b", "prompt_tokens"]) == (1000, 1000)
        # Retry-After honoured: the retry of a came at least 0.3 s after the 429
        calls_a = server.calls_for("a")
        assert calls_a[0].status == 429 and calls_a[1].at - calls_a[0].at >= 0.3
        # the client gave up on the hung call at its timeout (not before) and asked again; a client that waited
        # the hang out would have got its answer and left nothing abandoned
        assert [(a.call.tag, a.call.number) for a in server.abandoned] == [("c", 1)]
        (abandoned,) = server.abandoned_for("c")
        assert abandoned.after_s >= TIMEOUT_S - 0.5  # the client's clock starts before the server's receipt
        calls_c = server.calls_for("c")
        assert calls_c[1].at >= calls_c[0].at + abandoned.after_s
        # the re-ask continues the conversation with the model's answer and a format reminder
        calls_d = server.calls_for("d")
        assert [(c.n_messages, c.reminder) for c in calls_d] == [(2, False), (4, True)]
        assert [c.reminder for c in server.calls_for("f")] == [False, True]
        assert stats.reasks == 2 and stats.done == 6 and stats.failed == 3 and stats.cache_hits == 0
        assert ticks[-1] == (9, 9) and len(ticks) == 9
        # the key went to the server as a bearer token, and nowhere else
        assert all(c.authorization == f"Bearer {SECRET}" for c in server.calls)
        assert SECRET not in caplog.text
        assert not first["error"].str.contains(SECRET).any()
        assert SECRET not in repr(captioner)
        n_first = len(server.calls)

        # rerun: everything answers now; finished images are never requested again, failures are
        server.script = lambda tag, number, body: ok()
        second = fast_captioner(server.base_url).caption_all(requests, cache_dir=cache)
        rerun_tags = sorted(c.tag for c in server.calls[n_first:])
        assert rerun_tags == ["e", "f", "g"]
        assert (second["status"] == "done").all()
        again = second.set_index("image_id")
        assert again.loc["e", "attempts"] == 4  # 3 failed attempts of the first run carried over
        assert again.loc["a", "image_caption"] == by_id.loc["a", "image_caption"]
        assert again.loc["a", "prompt_tokens"] == 1000  # cached rows keep their recorded usage

        # a third run is served entirely from the cache
        n_second = len(server.calls)
        third_captioner = fast_captioner(server.base_url)
        third = third_captioner.caption_all(requests, cache_dir=cache)
        assert len(server.calls) == n_second and third_captioner.last_stats.cache_hits == 9
        pd.testing.assert_frame_equal(third, second)


def test_json_schema_mode_sends_response_format_and_parses_json(tmp_path):
    requests = make_requests(tmp_path / "images", ["j1", "j2"])
    with ChatServer() as server:
        frame = fast_captioner(server.base_url, json_schema=True).caption_all(requests, cache_dir=None)
        assert all(c.json_mode for c in server.calls)
    assert (frame["status"] == "done").all()
    assert frame.loc[0, "summarization"].startswith("Image j1 sits on")


def test_requests_per_minute_limit_paces_calls(tmp_path):
    requests = make_requests(tmp_path / "images", [f"r{i}" for i in range(30)])
    with ChatServer() as server:
        started = time.monotonic()
        captioner = fast_captioner(server.base_url, requests_per_minute=1200, concurrency=16)  # 20/s, burst 20
        frame = captioner.caption_all(requests)
        elapsed = time.monotonic() - started
    assert (frame["status"] == "done").all()
    assert elapsed >= 0.45  # 30 calls with a 20-call burst need at least 10 / 20 s more


def test_configuration_errors_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(CaptionerConfigError, match="OPENAI_API_KEY"):
        OpenAICompatibleCaptioner("m")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    captioner = OpenAICompatibleCaptioner("m")
    assert captioner.base_url == "http://127.0.0.1:9/v1"
    with pytest.raises(CaptionerConfigError, match="concurrency"):
        OpenAICompatibleCaptioner("m", concurrency=0)
    missing = [CaptionRequest("x", tmp_path / "nope.png", "d")]
    with pytest.raises(CaptionInputError, match="do not exist"):
        captioner.caption_all(missing)  # fails before any network call (port 9 would refuse)
    twice = make_requests(tmp_path / "images", ["x"]) * 2
    with pytest.raises(CaptionInputError, match="repeat image_id"):
        captioner.caption_all(twice)


_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from ugdata_pipeline.context.captioners import CaptionRequest
    from ugdata_pipeline.context.openai_captioner import OpenAICompatibleCaptioner
    base_url, folder, cache = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    tags, description = json.loads(sys.argv[4]), sys.argv[5]
    requests = [CaptionRequest(t, folder / f"{t}.png", description.format(tag=t)) for t in tags]
    OpenAICompatibleCaptioner("test-vlm", base_url=base_url, api_key="EMPTY", concurrency=2,
                              requests_per_minute=None, timeout_s=5).caption_all(requests, cache_dir=cache)
    """
)


def _done_in_cache(cache: Path) -> set[str]:
    done = set()
    for path in cache.glob("*/*.json"):
        if not path.name.endswith(".failed.json"):
            done.add(json.loads(path.read_text())["image_id"])
    return done


def test_killed_run_resumes_without_repeating_finished_images(tmp_path):
    tags = [f"k{i:02d}" for i in range(10)]
    requests = make_requests(tmp_path / "images", tags)
    cache = tmp_path / "cache"
    # The first four images answer at once; the others hang, so the kill always lands with exactly four done.
    with ChatServer(lambda tag, number, body: ok(0.05) if int(tag[1:]) < 4 else hang(30.0)) as server:
        child = subprocess.Popen(  # our own interpreter and script
            [
                sys.executable,
                "-c",
                _CHILD,
                server.base_url,
                str(tmp_path / "images"),
                str(cache),
                json.dumps(tags),
                DESCRIPTION,
            ],
            cwd=REPO_ROOT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        try:
            deadline = time.monotonic() + 60
            while len(_done_in_cache(cache)) < 4 and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.05)
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        finally:
            if child.poll() is None:
                child.kill()
        finished_before = _done_in_cache(cache)
        assert finished_before == {"k00", "k01", "k02", "k03"}
        in_flight = server.tags_called() - finished_before
        assert in_flight <= {"k04", "k05"}  # concurrency 2: at most two calls hanging when the process died
        n_before = len(server.calls)
        server.script = lambda tag, number, body: ok()

        captioner = OpenAICompatibleCaptioner(
            "test-vlm", base_url=server.base_url, api_key="EMPTY", concurrency=4, requests_per_minute=None, timeout_s=5
        )
        frame = captioner.caption_all(requests, cache_dir=cache)
        rerun = [c.tag for c in server.calls[n_before:]]
    assert (frame["status"] == "done").all() and len(frame) == len(tags)
    assert not set(rerun) & finished_before  # no call repeated for a finished image
    assert sorted(rerun) == sorted(set(tags) - finished_before)  # and each unfinished one asked exactly once
    assert captioner.last_stats.cache_hits == len(finished_before)


# ----------------------------------------------------------------------------------------------- template captioner

SUBGRAPH_NAMES = frozenset({"Alpha Street", "First Avenue", "Cafe Uno"})


def template_request(image_id: str, **facts_override) -> CaptionRequest:
    facts = {
        "visible": [
            {"osm_id": "n1", "name": "Cafe Uno", "category": "food", "kind": "poi", "distance_m": 42.0, "side": "left"},
            {
                "osm_id": "w7",
                "name": None,
                "category": "building",
                "kind": "building",
                "distance_m": 20.0,
                "side": "right",
            },
        ],
        "building_fraction": 0.4,
        "green_fraction": 0.25,
        "sky_fraction": 0.45,
        "road_fraction": 0.2,
        "tree_count": 6,
        "mean_building_height_m": 14.0,
        "street_name": "Alpha Street",
    }
    facts.update(facts_override)
    places = (CaptionPlace("Cafe Uno", "poi", "food", 42.0, 80.0), CaptionPlace("Bank Two", "poi", "bank", 250.0, 40.0))
    return CaptionRequest(image_id, Path(f"{image_id}.png"), "desc", facts, SUBGRAPH_NAMES, places)


def test_template_captioner_is_deterministic_varied_grounded_and_labelled():
    requests = [template_request(f"img{i:03d}") for i in range(40)]
    first = TemplateCaptioner(seed=0).caption_all(requests)
    again = TemplateCaptioner(seed=0).caption_all(requests)
    pd.testing.assert_frame_equal(first, again)
    assert isinstance(TemplateCaptioner(), Captioner)
    assert (first["model"] == "template").all() and (first["status"] == "done").all()
    openers = {c.split(".")[0] for c in first["image_caption"]}
    assert len(openers) >= 4  # same scene, different wording per image
    assert first["image_caption"].nunique() >= 20 and first["summarization"].nunique() >= 10
    assert (TemplateCaptioner(seed=1).caption_all(requests)["image_caption"] != first["image_caption"]).any()
    caption, summary = first.loc[0, ["image_caption", "summarization"]]
    # the image caption is the generic one (what is seen, by kind, never by name); names go to the summarization
    for text in first["image_caption"]:
        assert not any(name in text for name in ("Alpha Street", "Cafe Uno", *SUBGRAPH_NAMES)), text
    assert "food building" in caption
    assert "Alpha Street" in summary
    assert "Bank Two" not in summary  # outside the subgraph's names, never said
    names = {r.image_id: set(SUBGRAPH_NAMES) for r in requests}
    known = set(SUBGRAPH_NAMES) | {"Bank Two", "Central Park", "Beta Street"}
    assert hallucination_rate(first, names, known).observed == 0.0
    assert both_sections_share(first).observed == 1.0
    assert homogeneity(first).figures["near_duplicate_rate"] <= 0.05


def test_template_captions_of_varied_scenes_pass_the_homogeneity_gate():
    streets = ["Alpha Street", "Beta Street", "Gamma Street", "First Avenue", "Second Avenue", "Mannerheimintie"]
    places = [f"Place {k}" for k in range(40)]
    requests = []
    for i in range(120):
        street = streets[i % len(streets)]
        near = tuple(
            CaptionPlace(
                places[(i * 7 + k) % 40],
                "poi",
                ("shop", "food", "bank")[k],
                30.0 + 17 * k + i,
                (i * 37 + 90 * k) % 360.0,
            )
            for k in range(3)
        )
        facts = {
            "street_name": street,
            "building_fraction": (i % 5) / 8,
            "green_fraction": (i % 3) / 6,
            "sky_fraction": (i % 4) / 6,
            "tree_count": i % 7,
            "mean_building_height_m": 6.0 + i % 20,
            "visible": [
                {
                    "name": near[0].name,
                    "category": "shop",
                    "kind": "poi",
                    "distance_m": 20.0 + i % 50,
                    "side": ("left", "right", "ahead")[i % 3],
                }
            ],
        }
        requests.append(CaptionRequest(f"v{i}", Path("v.png"), "d", facts, {street, *(p.name for p in near)}, near))
    varied = TemplateCaptioner().caption_all(requests)
    same = TemplateCaptioner().caption_all([template_request(f"s{i}") for i in range(120)])
    varied_gate, same_gate = homogeneity(varied), homogeneity(same)
    assert varied_gate.passed and varied_gate.figures["near_duplicate_rate"] == 0.0
    assert varied_gate.figures["distinct_2gram_ratio"] > same_gate.figures["distinct_2gram_ratio"]


def test_template_captioner_follows_the_scene_facts():
    bare = TemplateCaptioner().caption_one(
        template_request(
            "x",
            street_name=None,
            building_fraction=0.02,
            green_fraction=0.0,
            tree_count=0,
            sky_fraction=0.1,
            visible=[],
        )
    )
    caption, summary = bare
    assert "Alpha Street" not in caption and "Cafe Uno" not in caption
    assert any(w in caption for w in ("Few buildings", "little built frontage", "sparse"))
    assert any(w in caption for w in ("vegetation", "greenery"))
    assert "Cafe Uno" in summary  # a subgraph place, from the request's places


# ----------------------------------------------------------------------------------------------- quality gates

CITY_NAMES = {"Alpha Street", "Beta Street", "First Avenue", "Cafe Uno", "Bank Two", "Central Park", "Park"}


def gate_frame(summaries: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": list(summaries),
            "image_caption": ["A street view with trees."] * len(summaries),
            "summarization": list(summaries.values()),
            "status": "done",
        }
    )


def test_grounding_catches_planted_places_and_street_like_names():
    names = {k: {"Alpha Street", "First Avenue", "Cafe Uno"} for k in ("clean", "planted", "invented", "finnish")}
    frame = gate_frame(
        {
            "clean": "Along Alpha Street, close to Cafe Uno and the park, where First Avenue crosses.",
            "planted": "The view is on Alpha Street, a short walk from Bank Two.",
            "invented": "The scene sits where Omega Street meets Alpha Street.",
            "finnish": "The camera faces Mannerheimintie near Cafe Uno.",
        }
    )
    result = hallucination_rate(frame, names, CITY_NAMES, maximum=0.05)
    assert not result.passed
    assert result.observed == 0.75
    flagged = {e.split(":")[0]: e for e in result.outcome.examples}
    assert set(flagged) == {"planted", "invented", "finnish"}
    assert "bank two" in flagged["planted"] and "omega street" in flagged["invented"]
    assert "mannerheimintie" in flagged["finnish"]
    assert result.figures["ungrounded_mentions"] == 3
    clean_only = hallucination_rate(frame[frame["image_id"] == "clean"], names, CITY_NAMES)
    assert clean_only.passed and clean_only.observed == 0.0


def test_place_mentions_use_longest_known_names_and_ignore_lowercase_words():
    mentions = find_place_mentions("Near Central Park, the park by Alpha Street.", CITY_NAMES)
    assert mentions == {"central park", "alpha street"}  # not "park" on its own


def test_both_sections_share_counts_failed_rows_against_it():
    frame = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d"],
            "image_caption": ["x" * 30, "x" * 30, None, "x" * 30],
            "summarization": ["y" * 30, "y" * 30, None, ""],
            "status": ["done", "done", "failed", "done"],
        }
    )
    result = both_sections_share(frame, minimum=0.95)
    assert not result.passed and result.observed == 0.5
    assert result.outcome.examples == ["c", "d"] and result.figures["failed"] == 1
    assert result.metadata()["observed"] == 0.5


def test_homogeneity_flags_copied_captions_and_passes_varied_ones():
    words = [
        "red",
        "brick",
        "tall",
        "glass",
        "quiet",
        "busy",
        "narrow",
        "wide",
        "leafy",
        "bare",
        "old",
        "new",
        "shops",
        "cafes",
        "offices",
        "homes",
        "tram",
        "bus",
        "bike",
        "lane",
        "corner",
        "square",
        "market",
        "church",
        "school",
        "river",
        "bridge",
        "hill",
        "harbour",
        "tower",
    ]
    varied = {f"v{i}": " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(14)) for i in range(30)}
    copied = dict.fromkeys((f"c{i}" for i in range(30)), "the same caption " * 8)
    varied_result = homogeneity(gate_frame(varied))
    copied_result = homogeneity(gate_frame(copied))
    assert copied_result.figures["near_duplicate_rate"] == 1.0 and not copied_result.passed
    assert copied_result.figures["distinct_2gram_ratio"] < 0.05
    assert varied_result.figures["near_duplicate_rate"] == 0.0
    assert varied_result.figures["distinct_2gram_ratio"] > copied_result.figures["distinct_2gram_ratio"]


def test_build_caption_requests_from_tables(tmp_path):
    images = pd.DataFrame(
        {
            "image_id": ["i1", "i2", "i3"],
            "path": ["c/images/i1.png", "c/images/i2.png", "x.png"],
            "scene_facts": [json.dumps({"street_name": "Alpha Street"}), "{}", "{}"],
            "split": ["train", "test", "excluded"],
        }
    )
    nodes = pd.DataFrame(
        {
            "image_id": ["i1", "i1", "i1", "i1", "i2"],
            "node_id": ["image:render:i1", "street:alpha-street", "poi:n1", "poi:n2", "poi:n2"],
            "kind": ["image", "street", "poi", "poi", "poi"],
            "name": [None, "Alpha Street", "Cafe Uno", "Bank Two", "Bank Two"],
            "category": [None, "residential", "food", "bank", "bank"],
            "dx_m": [0.0, 0.0, 10.0, 0.0, -5.0],
            "dy_m": [0.0, 5.0, 0.0, -300.0, 0.0],
            "distance_m": [0.0, 5.0, 10.0, 300.0, 5.0],
            "rank": [0, 1, 2, 3, 1],
        }
    )
    descriptions = pd.DataFrame({"image_id": ["i1"], "description": ["desc one"]})  # describe_subgraphs' table
    requests = build_caption_requests(images, descriptions, nodes, root=tmp_path)
    assert [r.image_id for r in requests] == ["i1", "i2"]  # excluded images are not captioned
    first = requests[0]
    assert first.image_path == tmp_path / "c/images/i1.png" and first.description == "desc one"
    assert first.allowed_names == {"Alpha Street", "Cafe Uno", "Bank Two"}
    assert [p.name for p in first.places] == ["Cafe Uno", "Bank Two"]  # nearest first, streets left out
    assert first.places[0].bearing_deg == pytest.approx(90.0) and first.places[1].bearing_deg == pytest.approx(180.0)
    assert first.scene_facts == {"street_name": "Alpha Street"} and requests[1].description == ""
