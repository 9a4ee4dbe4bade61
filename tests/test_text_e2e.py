"""Text emotion end to end: real gateway and text-worker processes, a real model, a real Redis."""

import json
import math
import signal
import threading
from pathlib import Path

import httpx
import pytest
from redis import Redis

from scripts.stack import Stack, wait_until
from shared.labels import LABELS
from shared.names import RedisNames
from tests.clients import dev_sentences, open_socket, receive

pytestmark = pytest.mark.slow


def check_result(result: dict[str, object]) -> None:
    assert result["type"] == "text.emotion", result
    scores = result["scores"]
    assert isinstance(scores, dict) and set(scores) == set(LABELS)
    assert math.isclose(sum(scores.values()), 1.0, abs_tol=1e-6)
    assert result["emotion"] == max(scores, key=scores.__getitem__)
    timing = result["timing"]
    assert isinstance(timing, dict) and timing["total_ms"] >= timing["queue_ms"] >= 0


def test_200_dev_sentences_each_get_one_result_in_seq_order(stack: Stack, data_dir: Path) -> None:
    stack.start("gateway")
    stack.start("worker-text")
    sentences = dev_sentences(data_dir, 200)
    ws, hello = open_socket(stack.ws + "/ws/emotion")
    for i, text in enumerate(sentences):
        ws.send(json.dumps({"text": text, "user_id": "u1", "id": f"m{i}"}))
    results = receive(ws, 200)
    ws.close()
    assert [r["seq"] for r in results] == list(range(1, 201))
    assert sorted(r["id"] for r in results) == sorted(f"m{i}" for i in range(200))
    for result in results:
        check_result(result)
        assert result["session_id"] == hello["session_id"] and result["user_id"] == "u1"
        assert result["text"] == sentences[int(str(result["id"])[1:])].strip()


def test_post_and_event_feed(stack: Stack) -> None:
    stack.start("gateway")
    stack.start("worker-text")
    received: list[dict[str, object]] = []
    ready = threading.Event()

    def listen() -> None:
        with httpx.stream(
            "GET", stack.http + "/stream-emotion-feed", params={"user_id": "alice"}, timeout=30
        ) as response:
            for line in response.iter_lines():
                ready.set()
                if line.startswith("data: "):
                    received.append(json.loads(line[6:]))
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(10)
    other = httpx.post(stack.http + "/stream-emotion", json={"text": "meh, whatever", "user_id": "bob"}, timeout=30)
    mine = httpx.post(
        stack.http + "/stream-emotion",
        json={"text": "I am so happy for you!", "user_id": "alice", "id": "q1"},
        timeout=30,
    )
    assert other.status_code == mine.status_code == 200
    body = mine.json()
    check_result(body)
    assert body["id"] == "q1" and body["emotion"] == "happiness"
    listener.join(10)
    assert [r["user_id"] for r in received] == ["alice"] and received[0]["text"] == "I am so happy for you!"


def test_kill_one_of_two_replicas_with_500_in_flight(stack: Stack, data_dir: Path) -> None:
    stack.env["EXPR_BUS__RECLAIM_IDLE_MS"] = "1500"
    stack.env["EXPR_BUS__BATCH_SIZE"] = "8"
    stack.env["EXPR_LIMITS__MESSAGES_PER_SECOND"] = "5000"  # all 500 at once: load, not a flood test
    stack.env["EXPR_LIMITS__BURST"] = "1000"
    stack.start("gateway")
    victim, survivor = stack.start("worker-text", replicas=2)
    sentences = (dev_sentences(data_dir, 500) * 2)[:500]
    ws, _ = open_socket(stack.ws + "/ws/emotion")
    for i, text in enumerate(sentences):
        ws.send(json.dumps({"text": text, "id": f"k{i}"}))
    first = receive(ws, 20)
    redis = Redis.from_url(stack.env["EXPR_REDIS__URL"])
    names = RedisNames(stack.env["EXPR_REDIS__PREFIX"])

    def victim_holds_entries() -> bool:
        consumers = redis.xinfo_consumers(names.tasks("text"), names.group("text"))
        return any(f"-{victim.pid}-" in c["name"].decode() and c["pending"] for c in consumers)

    wait_until(victim_holds_entries, 30, "the victim to hold unacknowledged entries")
    stack.kill(victim)  # kill -9 with a batch in hand: those entries must be reclaimed by the survivor
    rest = receive(ws, 480, timeout=120)
    ws.close()
    results = first + rest
    assert sorted(r["id"] for r in results) == sorted(f"k{i}" for i in range(500))  # all, none twice
    assert [r["seq"] for r in results] == list(range(1, 501))
    assert survivor.poll() is None
    for result in results:
        check_result(result)


def test_gateway_restart_client_resumes_with_last_seq(stack: Stack, data_dir: Path) -> None:
    stack.start("gateway")
    stack.start("worker-text")
    ws, hello = open_socket(stack.ws + "/ws/emotion")
    for i, text in enumerate(dev_sentences(data_dir, 60)):
        ws.send(json.dumps({"text": text, "id": f"r{i}"}))
    seen = receive(ws, 5)
    (gateway,) = stack.processes["gateway"]
    stack.kill(gateway, signal.SIGKILL)
    stack.processes["gateway"].remove(gateway)
    wait_until(lambda: stack.health() is None, 10, "the gateway to be gone")
    # the worker goes on publishing into the session's result stream while no gateway runs
    redis = Redis.from_url(stack.env["EXPR_REDIS__URL"])
    results_key = RedisNames(stack.env["EXPR_REDIS__PREFIX"]).session_results(hello["session_id"])
    wait_until(lambda: redis.xlen(results_key) >= 30, 60, "results produced while no gateway runs")
    stack.start("gateway")
    resumed, hello2 = open_socket(f"{stack.ws}/ws/emotion?session_id={hello['session_id']}&last_seq={seen[-1]['seq']}")
    assert hello2 == {"type": "session", "session_id": hello["session_id"], "resumed": True, "last_seq": 5}
    rest = receive(resumed, 55)
    resumed.close()
    assert [r["seq"] for r in seen + rest] == list(range(1, 61))
    assert sorted(r["id"] for r in seen + rest) == sorted(f"r{i}" for i in range(60))


def test_worker_stops_gracefully_on_sigterm(stack: Stack) -> None:
    stack.start("gateway")
    (worker,) = stack.start("worker-text")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    wait_until(lambda: stack.alive("text") == 0, 10, "the heartbeat to go")
