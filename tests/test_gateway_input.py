"""Bad input on every text endpoint: a typed error each, the socket stays open unless the SPEC says close.

A real gateway process with small limits; no worker runs, so accepted work waits in the stream.
"""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from scripts.stack import Stack, drop_keys
from tests.clients import open_socket


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    env = {
        "EXPR_LIMITS__MAX_MESSAGE_BYTES": "4096",
        "EXPR_LIMITS__MAX_TEXT_CHARS": "500",
        "EXPR_LIMITS__MESSAGES_PER_SECOND": "5",
        "EXPR_LIMITS__BURST": "10",
        "EXPR_BUS__MAX_QUEUE_DEPTH": "1000",
    }
    stack = Stack(redis_url, prefix, Path(tmp_path_factory.mktemp("gw")), env)
    stack.start("gateway")
    yield stack
    stack.close()
    drop_keys(redis_url, prefix)


@pytest.fixture
def ws(gateway: Stack) -> Iterator[ClientConnection]:
    socket, _ = open_socket(gateway.ws + "/ws/emotion")
    yield socket
    socket.close()


def ask(ws: ClientConnection, message: str | bytes) -> dict[str, object]:
    ws.send(message)
    answer: dict[str, object] = json.loads(ws.recv(timeout=10))
    return answer


def still_open(ws: ClientConnection) -> None:
    """A valid message is still accepted afterwards (no worker runs, so no answer is expected)."""
    ws.send(json.dumps({"text": "still here"}))
    ws.ping().wait(5)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("this is not json", "invalid_json"),
        ('{"text": ', "invalid_json"),
        (json.dumps({"text": 42}), "invalid_message"),
        (json.dumps({"text": ["a"]}), "invalid_message"),
        (json.dumps(["text"]), "invalid_message"),
        (json.dumps({"txt": "typo"}), "invalid_message"),
        (json.dumps({"text": "hi", "colour": "red"}), "invalid_message"),
        (json.dumps({"text": "hi", "user_id": 7}), "invalid_message"),
        (json.dumps({"text": ""}), "empty_text"),
        (json.dumps({"text": "   \n "}), "empty_text"),
        (json.dumps({"text": "x" * 501}), "text_too_long"),
        (json.dumps({"text": "hi", "session_id": "someone-elses-session"}), "session_mismatch"),
    ],
)
def test_bad_message_gets_typed_error_and_socket_stays_open(ws: ClientConnection, message: str, code: str) -> None:
    answer = ask(ws, message)
    assert answer["type"] == "error" and answer["code"] == code, answer
    assert answer["message"]
    still_open(ws)


def test_error_carries_the_client_id(ws: ClientConnection) -> None:
    answer = ask(ws, json.dumps({"id": "abc", "text": ""}))
    assert answer["id"] == "abc" and answer["code"] == "empty_text"


def test_binary_frame_on_text_socket_closes_1003(ws: ClientConnection) -> None:
    answer = ask(ws, b"\x00\x01binary")
    assert answer["code"] == "unsupported_data"
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003


def test_oversized_message_closes_1009(ws: ClientConnection) -> None:
    answer = ask(ws, json.dumps({"text": "y" * 5000}))
    assert answer["code"] == "message_too_big"
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_flood_gets_rate_limited_errors_without_closing(ws: ClientConnection) -> None:
    for i in range(30):
        ws.send(json.dumps({"text": "flood", "id": f"f{i}"}))
    answers = [json.loads(ws.recv(timeout=10)) for _ in range(30 - 10)]
    assert {a["code"] for a in answers} == {"rate_limited"}
    assert all(a["id"].startswith("f") for a in answers)  # each refusal names the message it refuses
    ws.ping().wait(5)


def test_bad_session_id_closes_1008(gateway: Stack) -> None:
    from websockets.sync.client import connect

    socket = connect(gateway.ws + "/ws/emotion?session_id=bad*id", compression=None)
    with pytest.raises(ConnectionClosed) as closed:
        socket.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": b"not json", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ({"json": {"text": 3}}, 422, "invalid_message"),
        ({"json": {"text": "hi", "extra": 1}}, 422, "invalid_message"),
        ({"json": {}}, 422, "invalid_message"),
        ({"json": {"text": ""}}, 422, "empty_text"),
        ({"json": {"text": "z" * 501}}, 422, "text_too_long"),
        (
            {"content": b"text=hi", "headers": {"content-type": "application/x-www-form-urlencoded"}},
            415,
            "unsupported_data",
        ),
        ({"json": {"text": "q" * 5000}}, 413, "message_too_big"),
    ],
)
def test_http_bad_input_is_4xx_json(gateway: Stack, kwargs: dict[str, object], status: int, code: str) -> None:
    response = httpx.post(gateway.http + "/stream-emotion", timeout=10, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["code"] == code


def test_unknown_route_and_health_and_docs(gateway: Stack) -> None:
    assert httpx.get(gateway.http + "/nope").json()["code"] == "not_found"
    health = httpx.get(gateway.http + "/health").json()
    assert health["redis"] is True and health["status"] == "degraded"  # no text worker runs here
    assert httpx.get(gateway.http + "/docs").status_code == 200
    assert (
        "/ws/emotion" not in httpx.get(gateway.http + "/openapi.json").json()["paths"]
    )  # sockets are documented in README
    metrics = httpx.get(gateway.http + "/metrics").text
    assert "expr_errors_total" in metrics and "expr_queue_backlog" in metrics
