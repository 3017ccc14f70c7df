"""Tests of the simulation pieces: replay sets and server, fleet, simulated users, report."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import statistics
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from alchemist.adapters.base import Message
from alchemist.daemon.sim.fleet import ACCURACY, PROVIDERS, SKILLS, make_fleet
from alchemist.daemon.sim.replay import (
    Latency,
    RecordedAnswer,
    ReplayItem,
    ReplayServer,
    ReplaySet,
    load_replay,
    prompt_key,
)
from alchemist.daemon.sim.report import Served, build_report, format_table, write_plot
from alchemist.daemon.sim.users import SimulatedUsers
from tests.conftest import BENCH_DIR

SMALL: list[dict[str, Any]] = [
    {"id": "q1", "skill": "math", "gold": "4",
     "messages": [{"role": "user", "content": "What is 2 + 2?"}],
     "answers": {"alpha": {"text": '{"answer": "4"}', "score": 1.0},
                 "beta": {"text": '{"answer": "5"}', "score": 0.0}}},
    {"id": "q2", "skill": "code", "gold": "'ab'",
     "messages": [{"role": "system", "content": "Be terse."},
                  {"role": "user", "content": "What is 'a' + 'b'?"}],
     "answers": {"beta": {"text": "'ab'", "score": 1.0},
                 "gamma": {"text": "ab", "score": 0.4}}},
]


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


async def _ask(session: aiohttp.ClientSession, base_url: str, model: str,
               messages: list[dict[str, str]]) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{base_url}/chat/completions",
                            json={"model": model, "messages": messages}) as resp:
        return resp.status, await resp.json()


@pytest.fixture
def small(tmp_path: Path) -> ReplaySet:
    return load_replay(_write_jsonl(tmp_path / "small.jsonl", SMALL))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as s:
        yield s


# ---------------------------------------------------------------- replay sets


@pytest.mark.parametrize("name", ["set.jsonl", "set.jsonl.gz"])
def test_load_replay(tmp_path: Path, name: str) -> None:
    rs = load_replay(_write_jsonl(tmp_path / name, [*SMALL[:1], "", *SMALL[1:]]))
    assert [i.id for i in rs.items] == ["q1", "q2"]
    assert rs.models == ("alpha", "beta", "gamma")  # union, first-seen order
    assert rs.items[1].messages == (Message("system", "Be terse."),
                                    Message("user", "What is 'a' + 'b'?"))
    assert rs.items[0].answers["beta"] == RecordedAnswer('{"answer": "5"}', 0.0)
    assert rs.score("q2", "gamma") == 0.4
    assert rs.score("q1", "gamma") == 0.0  # no answer recorded there
    with pytest.raises(KeyError, match="nope"):
        rs.score("nope", "alpha")
    with pytest.raises(KeyError, match="delta"):
        rs.score("q1", "delta")


@pytest.mark.parametrize(("line", "fault"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({**SMALL[0], "id": ""}), "`id`"),
    (json.dumps({k: v for k, v in SMALL[0].items() if k != "answers"}), "missing field 'answers'"),
    (json.dumps({**SMALL[0], "messages": [{"role": "user"}]}), r"messages\[0\]"),
    (json.dumps({**SMALL[0], "answers": {"a": {"text": "x", "score": 2}}}), r"score.*\[0, 1\]"),
    (json.dumps({**SMALL[0], "answers": {"a": {"score": 1}}}), "string `text`"),
    (json.dumps(SMALL[0]), "already used on line 1"),
])
def test_load_replay_names_file_line_and_fault(tmp_path: Path, line: str, fault: str) -> None:
    path = _write_jsonl(tmp_path / "bad.jsonl", [SMALL[0], line])
    with pytest.raises(ValueError, match=rf"bad\.jsonl:2: .*{fault}"):
        load_replay(path)


def test_prompt_key_is_stable_and_content_sensitive() -> None:
    msgs = [Message("system", "s"), Message("user", "héllo")]
    as_dicts = [{"role": "system", "content": "s"}, {"role": "user", "content": "héllo"}]
    assert prompt_key(msgs) == prompt_key(as_dicts) == prompt_key(tuple(msgs))
    # pinned: keys must not change between releases (recorded sets are matched by them)
    assert prompt_key(msgs) == "19ffc1636c1b3b54b61ce6eeaa4410edc72379bead4d0f98f73a05a11c142f3c"
    assert prompt_key([Message("user", "s"), Message("user", "héllo")]) != prompt_key(msgs)
    assert prompt_key([Message("system", "s\nuser"), Message("user", "")]) != prompt_key(msgs)


# ---------------------------------------------------------------- the server


async def test_server_serves_recorded_text(small: ReplaySet,
                                           session: aiohttp.ClientSession) -> None:
    async with ReplayServer(small, latency=Latency(0.0), seed=1) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert server.base_url.endswith("/v1")
        for row in SMALL:
            for model, answer in row["answers"].items():
                status, body = await _ask(session, server.base_url, model, row["messages"])
                assert status == 200, body
                assert body["object"] == "chat.completion"
                assert body["model"] == model
                choice = body["choices"][0]
                assert choice["message"] == {"role": "assistant", "content": answer["text"]}
                assert choice["finish_reason"] == "stop"
                usage = body["usage"]
                assert usage["completion_tokens"] == -(-len(answer["text"]) // 4)
                assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        async with session.get(f"{server.base_url}/models") as resp:
            assert [m["id"] for m in (await resp.json())["data"]] == list(small.models)
    assert server.stats["ok"] == 4


async def test_server_unknown_model_or_prompt_is_404(small: ReplaySet,
                                                     session: aiohttp.ClientSession) -> None:
    q1 = SMALL[0]["messages"]
    async with ReplayServer(small, latency=Latency(0.0)) as server:
        status, body = await _ask(session, server.base_url, "delta", q1)
        assert status == 404
        assert "unknown model 'delta'" in body["error"]["message"]
        assert body["error"]["code"] == "model_not_found"
        status, body = await _ask(session, server.base_url, "alpha",
                                  [{"role": "user", "content": "What is 2 + 3?"}])
        assert status == 404
        assert body["error"]["code"] == "prompt_not_found"
        status, body = await _ask(session, server.base_url, "gamma", q1)
        assert status == 404
        assert "no recorded answer for item 'q1'" in body["error"]["message"]
        async with session.post(f"{server.base_url}/chat/completions", data=b"{nope") as resp:
            assert resp.status == 400
        assert server.stats == {"ok": 0, "failed": 0, "not_found": 3, "bad_request": 1}


async def test_server_failure_rate(small: ReplaySet, session: aiohttp.ClientSession) -> None:
    q1 = SMALL[0]["messages"]
    n = 1000
    async with ReplayServer(small, latency=Latency(0.0), failure_rate={"alpha": 0.25},
                            seed=7) as server:
        results = await asyncio.gather(*(_ask(session, server.base_url, m, q1)
                                         for _ in range(n) for m in ("alpha", "beta")))
    statuses = Counter((body["model"] if s == 200 else "fail", s) for s, body in results)
    failed = [body for s, body in results if s == 500]
    assert statuses[("beta", 200)] == n  # beta has no failure rate
    assert abs(len(failed) / n - 0.25) < 0.05
    assert all(b["error"]["code"] == "simulated_failure" for b in failed)


async def test_server_answers_a_thousand_requests_at_once(
        session: aiohttp.ClientSession) -> None:
    # its throughput is measured by benchmarks/fanout.py (open loop at 200 requests/s)
    fleet = make_fleet(n_tasks=200, seed=0)
    items = fleet.replay.items
    n = 1000
    async with ReplayServer(fleet.replay, latency=Latency(20.0), seed=0) as server:
        results = await asyncio.gather(*(
            _ask(session, server.base_url, PROVIDERS[i % 5],
                 [{"role": m.role, "content": m.content} for m in items[i % 200].messages])
            for i in range(n)))
    assert all(s == 200 for s, _ in results)


async def test_server_on_real_bench(session: aiohttp.ClientSession) -> None:
    path = BENCH_DIR / "gsm8k.jsonl.gz"
    if not path.exists():
        pytest.skip(f"no replay set at {path} (set ALCHEMIST_BENCH_DIR to the bench folder)")
    rs = load_replay(path)
    assert len(rs.items) > 1000
    assert len(rs.models) == 8
    rng = random.Random(0)
    async with ReplayServer(rs, latency=Latency(0.0)) as server:
        for item in rng.sample(rs.items, 5):
            model = rng.choice(rs.models)
            messages = [{"role": m.role, "content": m.content} for m in item.messages]
            status, body = await _ask(session, server.base_url, model, messages)
            assert status == 200
            assert body["choices"][0]["message"]["content"] == item.answers[model].text


def test_server_refuses_bad_configuration(small: ReplaySet) -> None:
    with pytest.raises(ValueError, match="delta"):
        ReplayServer(small, failure_rate={"delta": 0.1})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ReplayServer(small, failure_rate=1.5)
    twin = ReplayItem("q3", "math", small.items[0].messages, None, {})
    with pytest.raises(ValueError, match="same messages"):
        ReplayServer(ReplaySet((*small.items, twin)))


def test_latency_distribution() -> None:
    rng = random.Random(3)
    assert Latency(35.0).sample(rng) == 0.035
    lat = Latency(50.0, "lognormal", p99_ratio=4.0)
    draws = sorted(lat.sample(rng) for _ in range(20_000))
    median, p99 = statistics.median(draws), draws[int(0.99 * len(draws))]
    assert median == pytest.approx(0.050, rel=0.05)
    assert p99 / median == pytest.approx(4.0, rel=0.12)
    for bad in ({"median_ms": -1.0}, {"p99_ratio": 0.5}, {"tail": "pareto"}):
        with pytest.raises(ValueError):
            Latency(**bad)


# ---------------------------------------------------------------- the fleet


def test_fleet_is_deterministic() -> None:
    a, b = make_fleet(120, seed=5), make_fleet(120, seed=5)
    assert a.replay == b.replay
    assert a.description == b.description
    assert make_fleet(120, seed=6).replay != a.replay
    assert a.replay.models == PROVIDERS
    assert set(a.latency) == set(a.failure_rate) == set(PROVIDERS)
    assert a.failure_rate["sim-flaky"] == pytest.approx(0.10)


def test_fleet_accuracy_and_answers_match_the_spec() -> None:
    fleet = make_fleet(4000, seed=0)
    items = fleet.replay.items
    assert Counter(i.skill for i in items) == dict.fromkeys(SKILLS, 1000)
    ReplayServer(fleet.replay)  # prompts are distinct
    right: Counter[tuple[str, str]] = Counter()
    wrong_agreements = 0
    for item in items:
        wrong_answers = []
        for model, rec in item.answers.items():
            answer = json.loads(rec.text.removeprefix("Here is my answer:\n\n")
                                .removeprefix("```json\n").removesuffix("\n```"))
            assert set(answer) == {"reasoning", "answer"}
            assert rec.score == (1.0 if answer["answer"] == item.gold else 0.0)
            right[model, item.skill] += int(rec.score)
            if not rec.score:
                wrong_answers.append(answer["answer"])
        wrong_agreements += len(wrong_answers) - len(set(wrong_answers))
    for model in PROVIDERS:
        for skill in SKILLS:
            assert right[model, skill] / 1000 == pytest.approx(ACCURACY[model][skill], abs=0.05)
    assert wrong_agreements > 100  # wrong providers sometimes agree
    flaky = fleet.latency["sim-flaky"]
    assert flaky.p99_ratio >= 10 and fleet.failure_rate["sim-flaky"] == 0.10
    assert "sim-mathwiz" in fleet.description


# ---------------------------------------------------------------- simulated users


def _up_share(users: SimulatedUsers, score: float, n: int = 20_000) -> tuple[float, float]:
    ratings = [users.rate(score) for _ in range(n)]
    given = [r for r in ratings if r is not None]
    return len(given) / n, sum(r.value == 1 for r in given) / len(given)


@pytest.mark.parametrize(("score", "noise", "up"), [
    (1.0, 0.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0.1, 0.9), (0.0, 0.1, 0.1),
    (0.3, 0.0, 0.3), (0.3, 0.2, 0.3 * 0.8 + 0.7 * 0.2), (0.5, 0.0, 0.5),
])
def test_users_rate_by_score_and_noise(score: float, noise: float, up: float) -> None:
    rated, up_share = _up_share(SimulatedUsers(rated=0.4, noise=noise, seed=11), score)
    assert rated == pytest.approx(0.4, abs=0.015)
    assert up_share == pytest.approx(up, abs=0.02)


def test_users_are_a_seeded_pool() -> None:
    a, b = SimulatedUsers(1.0, 0.1, seed=2, n_users=7), SimulatedUsers(1.0, 0.1, seed=2, n_users=7)
    ra = [a.rate(0.7) for _ in range(500)]
    assert ra == [b.rate(0.7) for _ in range(500)]
    assert {r.user for r in ra if r is not None} == set(a.users) and len(a.users) == 7
    assert SimulatedUsers(0.0, 0.0, seed=0).rate(1.0) is None
    for bad in ({"rated": 1.2}, {"noise": -0.1}, {"n_users": 0}):
        with pytest.raises(ValueError):
            SimulatedUsers(**{"rated": 0.5, "noise": 0.1, "seed": 0, **bad})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="score"):
        SimulatedUsers(1.0, 0.0, seed=0).rate(1.5)


def test_users_decide_whether_apart_from_how() -> None:
    # lockstep draws whether a request gets rated when it is sent, how once it is answered
    a, b = SimulatedUsers(0.5, 0.1, seed=4), SimulatedUsers(0.5, 0.1, seed=4)
    whether = [a.will_rate() for _ in range(200)]
    seen = []
    for _ in range(200):
        rated = b.will_rate()
        if rated:
            b.judge(1.0)  # drawing how does not move the draws of whether
        seen.append(rated)
    assert whether == seen
    assert 60 < sum(whether) < 140
    assert [b.judge(0.3) for _ in range(50)] != [b.judge(0.3) for _ in range(50)]


# ---------------------------------------------------------------- the report


def _tiny() -> ReplaySet:
    def item(i: str, *answers: tuple[str, float]) -> ReplayItem:
        recs = {m: RecordedAnswer(t, s) for m, (t, s) in zip("ABC", answers, strict=True)}
        return ReplayItem(i, "math", (Message("user", i),), None, recs)

    return ReplaySet((
        item("i1", ("ans:1", 1.0), ("ans:1", 1.0), ("ans:2", 0.0)),
        item("i2", ("ans:5", 0.0), ("ans:6", 1.0), ("ans:5", 0.0)),  # the vote picks 5: wrong
        item("i3", ("ans:x", 0.0), ("ans:y", 0.0), ("ans:z", 0.0)),  # nobody right
        item("i4", ("garbage", 0.0), ("ans:7", 1.0), ("ans:8", 0.0)),  # A abstains; tie -> B
    ))


def _extract(text: str) -> str | None:
    return text.removeprefix("ans:") if text.startswith("ans:") else None


def test_report_on_a_hand_computed_example(tmp_path: Path) -> None:
    served = [Served("i1", "A", 3, True), Served("i2", "B", 2, False),
              Served("i3", None, 3, True), Served("i4", "C", 1, True)]
    report = build_report(_tiny(), served, extract=_extract, window=2, recipes_promoted=2)
    assert report == {
        "requests": 4,
        "served_score_all": 50.0,
        "served_score_last_half": 0.0,
        "best_single": {"model": "B", "score": 75.0},
        "plurality_vote": 50.0,
        "oracle": 75.0,
        "mean_providers_called": 2.25,
        "mean_providers_called_last_half": 2.0,
        "golden": 0,
        "golden_calls": 0,
        "provider_calls_per_request": 2.25,
        "recipes_promoted": 2,
        "ratings_sent": 3,
        "curve": {"x": [2, 3, 4], "served": [100.0, 50.0, 0.0],
                  "best_single": [100.0, 50.0, 50.0]},
    }
    json.dumps(report)  # JSON-ready
    table = format_table(report)
    assert "best single (B)" in table and "75.00 %" in table and "-25.00 pts" in table
    assert "golden" not in table
    # 2 golden prompts asked in 8 calls, never served: amortised over the 4 served requests
    golden = build_report(_tiny(), served, extract=_extract, window=2, golden=2, golden_calls=8)
    assert golden["provider_calls_per_request"] == 4.25 and golden["mean_providers_called"] == 2.25
    assert "golden provider calls" in format_table(golden)
    png = tmp_path / "out" / "run.png"
    write_plot(report, png, "tiny run")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_report_curve_is_thinned_and_ends_at_the_last_request() -> None:
    fleet = make_fleet(300, seed=1)
    served = [Served(fleet.replay.items[i % 300].id, "sim-coder", 2, i % 3 == 0)
              for i in range(3000)]
    report = build_report(fleet.replay, served, extract=_extract, window=100)
    curve = report["curve"]
    assert isinstance(curve, dict)
    assert curve["x"][0] == 100 and curve["x"][-1] == 3000 and len(curve["x"]) <= 502
    assert len(curve["served"]) == len(curve["best_single"]) == len(curve["x"])
    with pytest.raises(ValueError, match="at least one"):
        build_report(fleet.replay, [], extract=_extract)
