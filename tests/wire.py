"""Speaking to a Voila server as a raw client would, without a browser: its page, the kernel id in it, and
kernel messages framed as the page's own client frames them (jupyter_server's v1 websocket protocol).

Like a browser, the client keeps the cookies the server sets (JAR, unless told `jar=None`: a client
without any), and sends them back: a kernel answers only to the visitor whose page it was bound to."""
from __future__ import annotations

import http.cookiejar
import json
import re
import time
import urllib.error
import urllib.request
import uuid

import websocket

V1 = "v1.kernel.websocket.jupyter.org"


JAR = http.cookiejar.CookieJar()  # the visitor these helpers speak for, unless told otherwise


def request(url: str, method: str = "GET", headers: dict | None = None, jar: http.cookiejar.CookieJar | None = JAR,
            data: bytes | None = None) -> tuple[int, bytes]:
    """(status, body) of one request, sending and keeping `jar`'s cookies (None: none at all)."""
    handlers = [urllib.request.HTTPCookieProcessor(jar)] if jar is not None else []
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(urllib.request.Request(url, data=data, headers=headers or {}, method=method), timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get(url: str, headers: dict | None = None, jar: http.cookiejar.CookieJar | None = JAR) -> tuple[int, bytes]:
    return request(url, "GET", headers, jar)


def cookie_header(jar: http.cookiejar.CookieJar | None = JAR) -> str | None:
    """The Cookie header `jar` sends (the helpers speak to one loopback server at a time)."""
    return "; ".join(f"{c.name}={c.value}" for c in jar) if jar is not None else None


def kernel_id(page_html: bytes) -> str:
    m = re.search(rb'"kernelId":\s*"([0-9a-f-]{36})"', page_html)
    assert m, "no kernel id in the page"
    return m.group(1).decode()


def v1_frame(msg_type: str, content, channel: str = "shell", buffers: list[bytes] = (), metadata: dict | None = None) -> bytes:
    """One kernel message: an 8-byte part count, the parts' offsets, then channel, header, parent, metadata, content
    (bytes: as they are), and any binary buffers (a photo the page sends)."""
    header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": uuid.uuid4().hex, "username": "",
              "version": "5.3", "date": "2026-01-01T00:00:00Z"}
    parts = [channel.encode(), *(json.dumps(p).encode() for p in (header, {}, metadata or {})),
             content if isinstance(content, bytes) else json.dumps(content).encode(), *buffers]
    offsets = [8 * (len(parts) + 2)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    return b"".join([(len(parts) + 1).to_bytes(8, "little"), *(o.to_bytes(8, "little") for o in offsets), *parts])


def msg_type(frame: bytes) -> str:
    """The message type of a v1 frame the server sent."""
    return parse(frame)["header"]["msg_type"]


def parse(frame: bytes) -> dict:
    """A v1 frame the server sent: channel, header, parent_header, metadata, content, buffers."""
    n = int.from_bytes(frame[:8], "little")
    offsets = [int.from_bytes(frame[8 * i:8 * (i + 1)], "little") for i in range(1, n + 1)]
    parts = [frame[a:b] for a, b in zip(offsets, offsets[1:])]
    names = ["header", "parent_header", "metadata", "content"]
    return {"channel": parts[0].decode(), **{k: json.loads(p) for k, p in zip(names, parts[1:5])},
            "buffers": parts[5:]}


def channels(url: str, kernel: str, subprotocols: list[str] | None = (V1,), cookie: str | None = None,
             jar: http.cookiejar.CookieJar | None = JAR):
    """The kernel's websocket, as the page opens it (the v1 subprotocol, the jar's cookies) unless told otherwise."""
    return websocket.create_connection(url.replace("http", "ws", 1) + f"/api/kernels/{kernel}/channels", timeout=10,
                                       subprotocols=list(subprotocols) if subprotocols else None,
                                       cookie=cookie if cookie is not None else cookie_header(jar))


def replies(ws, until: str, seconds: float = 20) -> list[str]:
    """Message types the server sends on `ws` until one of type `until` (or `seconds` pass)."""
    seen, deadline = [], time.time() + seconds
    while time.time() < deadline and until not in seen:
        try:
            data = ws.recv()
        except websocket.WebSocketTimeoutException:
            break
        if isinstance(data, bytes):
            seen.append(msg_type(data))
    return seen


def send(ws, msg_type: str, content=None, buffers: list[bytes] = (), metadata: dict | None = None) -> None:
    ws.send(v1_frame(msg_type, {} if content is None else content, buffers=buffers, metadata=metadata),
            opcode=websocket.ABNF.OPCODE_BINARY)


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
