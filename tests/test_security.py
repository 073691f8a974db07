"""A hostile visitor against a real Voila server on loopback (docs/security.md): each test sends the hostile
input itself, bounded in count and time, then checks that the server still answers everyone else."""
import json
import struct
import time
import urllib.request

import psutil
import pytest
import websocket

from browser import voila
from wire import V1, channels, get, kernel_id, replies, send


@pytest.fixture(scope="module")
def server():
    with voila() as (url, log, proc):
        yield url, log, proc


def answers_health(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url + "/voila/static/health.txt", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def is_closed(ws, within: float = 5.0) -> bool:
    """Whether the server closes `ws` within `within` seconds (frames it sends before that are dropped)."""
    ws.settimeout(within)
    deadline = time.time() + within
    try:
        while time.time() < deadline:
            opcode, _ = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return True
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        return True
    except websocket.WebSocketTimeoutException:
        return False
    return False


def kernel_answers(url: str, kernel: str) -> bool:
    """A well-formed kernel_info_request on a fresh socket gets its reply: the page's own traffic still flows."""
    ws = channels(url, kernel)
    try:
        send(ws, "kernel_info_request")
        return "kernel_info_reply" in replies(ws, until="kernel_info_reply")
    finally:
        ws.close()


@pytest.mark.parametrize("frame, subprotocols", [
    pytest.param(struct.pack("<Q", 2**62), [V1], id="v1-part-count-2**62"),
    pytest.param(struct.pack("!I", 0x7FFFFFFF) + b"\0" * 8, None, id="legacy-buffer-count-0x7fffffff"),
])
def test_one_hostile_frame_neither_stops_nor_fills_the_server(server, frame, subprotocols):
    url, log, proc = server
    _, page = get(url + "/")
    kernel = kernel_id(page)
    before = psutil.Process(proc.pid).memory_info().rss
    ws = channels(url, kernel, subprotocols)
    ws.send(frame, opcode=websocket.ABNF.OPCODE_BINARY)
    assert is_closed(ws), "the attacker's socket stays open"
    start = time.time()
    assert answers_health(url, timeout=2.0) and time.time() - start < 2.0, "no answer on the health route within 2 s"
    time.sleep(2)  # a loop over the count would still be growing: give it time to show
    grown = (psutil.Process(proc.pid).memory_info().rss - before) / 2**20
    assert grown < 50, f"the server grew by {grown:.0f} MiB"
    assert answers_health(url)
    assert kernel_answers(url, kernel), "the visitor's kernel no longer answers a well-formed message"
    assert "Closing the websocket of kernel" in log.read_text()


@pytest.mark.parametrize("frame", [
    pytest.param(b"", id="empty"),
    pytest.param(struct.pack("<Q", 6) + struct.pack("<Q", 10**12) * 6 + b"shell", id="offsets-past-the-end"),
    pytest.param(struct.pack("<Q", 3) + b"\0" * 40, id="too-few-parts"),
    pytest.param(b"\x01" * 200, id="garbage"),
    pytest.param(json.dumps({"channel": "shell", "header": {"msg_type": "kernel_info_request"}}), id="text-frame"),
])
def test_a_malformed_frame_closes_that_socket_and_the_kernel_goes_on(server, frame):
    url, _, _ = server
    _, page = get(url + "/")
    kernel = kernel_id(page)
    ws = channels(url, kernel)
    ws.send(frame, opcode=websocket.ABNF.OPCODE_TEXT if isinstance(frame, str) else websocket.ABNF.OPCODE_BINARY)
    assert is_closed(ws)
    assert answers_health(url)
    assert kernel_answers(url, kernel)
