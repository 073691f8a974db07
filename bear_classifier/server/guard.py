"""What the server lets a visitor's browser do over the kernel websocket, checked before jupyter_server parses it.

jupyter_server 2.21 and Voila 0.5.13 trust the counts and offsets at the start of a binary frame:
`deserialize_msg_from_ws_v1` loops over the part count the client sent (2**62 parts from 8 bytes),
and the legacy protocol's `deserialize_binary_message` builds a struct format of the count it reads
(0x7fffffff from 12 bytes). Either freezes the whole server and fills its memory (docs/security.md).
`SafeChannels`, set as the `kernel_websocket_connection_class` in voila.json (and in the Jupyter
server's config on Binder), bounds every count and offset by the frame's own length first, speaks
only the v1 protocol the page uses, and closes the socket of a client that sends anything else.

It also holds a client to what the page does, so that one visitor can't grow the shared server or their
kernel without end: the page opens ipywidgets' control comm and asks for the widgets' states once, and
never creates a widget (a client-made `jupyter.widget` holds whatever buffers it is sent, in the kernel);
no message is sent twice (a replayed frame costs the kernel a logged traceback); a kernel has a few
sockets at most; and output a client leaves unread is capped (the server buffers it, unbounded).
"""
from __future__ import annotations

import asyncio
import json
from collections import Counter, OrderedDict
from dataclasses import dataclass

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado.iostream import StreamBufferFullError
from traitlets import Integer

V1 = "v1.kernel.websocket.jupyter.org"
CHANNELS = ("shell", "control", "stdin", "iopub")
MAX_BUFFERS = 16  # a photo is one buffer; nothing the page sends has more
# A v1 frame: an 8-byte count n, then n 8-byte offsets, then n - 1 parts: the channel, the header,
# parent header, metadata, content, and any binary buffers. The last offset is the frame's end.
MIN_OFFSETS, MAX_OFFSETS = 6, 6 + MAX_BUFFERS
PARTS = ("header", "parent header", "metadata", "content")  # the JSON parts, after the channel
POLICY_VIOLATION = 1008  # websocket close code: the message broke the server's rules
OPENABLE = {"jupyter.widget.control"}  # the comm targets the page opens (ipywidgets' widget manager)
MAX_STATE_REQUESTS = 4  # per socket: the page asks once when it loads; each answer is every widget's state
MAX_SOCKETS = 4  # per kernel: one page holds one; a reconnect replaces it
MAX_UNREAD = 8 * 2**20  # bytes of output a socket may leave unread (a page reads as it goes; a batch's cards: ~2 MB)
SEEN_IDS = 1024  # message ids remembered per socket, to refuse a replay
MAX_UPDATE = 4096  # bytes of a widget update's whole frame: the page's only one is a card's "Where it looked" toggle


class FrameError(ValueError):
    """A websocket frame that is not a well-formed v1 kernel message; str(error) says what is wrong."""


@dataclass(frozen=True)
class Message:
    """What the guard reads of a well-formed frame: the message's header and content, and its buffer count."""

    header: dict
    content: dict
    buffers: int


def check_v1_frame(frame: bytes | str) -> Message:
    """The message in `frame`, unless it is not a well-formed v1 kernel message: then FrameError. Reads the
    offset table only after bounding its length by the frame's, so no frame costs more than its own size; the
    header, parent header, metadata and content must be JSON objects, decoded as the kernel decodes them
    (invalid UTF-8 replaced), so the kernel sees what the guard saw and has no traceback to log."""
    if not isinstance(frame, bytes):
        raise FrameError("a text frame (the v1 protocol sends binary frames only)")
    if len(frame) < 8 * (1 + MIN_OFFSETS):
        raise FrameError(f"a {len(frame)}-byte frame, too short for a message")
    n = int.from_bytes(frame[:8], "little")
    if not MIN_OFFSETS <= n <= MAX_OFFSETS or 8 * (1 + n) > len(frame):
        raise FrameError(f"a part count of {n} in a {len(frame)}-byte frame")
    offsets = [int.from_bytes(frame[8 * i:8 * (i + 1)], "little") for i in range(1, n + 1)]
    if offsets[0] != 8 * (1 + n) or offsets[-1] != len(frame) or offsets != sorted(offsets):
        raise FrameError("offsets outside the frame or out of order")
    if frame[offsets[0]:offsets[1]].decode("ascii", "replace") not in CHANNELS:
        raise FrameError("an unknown channel")
    dicts = []
    for name, start, end in zip(PARTS, offsets[1:5], offsets[2:6]):
        try:
            part = json.loads(frame[start:end].decode("utf8", "replace"))
        except ValueError:
            part = None
        if not isinstance(part, dict):
            raise FrameError(f"a {name} that is not a JSON object")
        dicts.append(part)
    header, _, _, content = dicts
    if not isinstance(header.get("msg_type"), str):
        raise FrameError("a header without a message type")
    return Message(header, content, n - MIN_OFFSETS)


class SafeChannels(ZMQChannelsWebsocketConnection):
    """The kernel websocket, speaking the v1 protocol only, with every frame checked before it is parsed."""

    _sockets: Counter = Counter()  # kernel id -> its open sockets, in this server
    max_unread = Integer(MAX_UNREAD, config=True, help="Bytes of output a socket may leave unread before it is closed.")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._seen: OrderedDict[str, None] = OrderedDict()  # the latest SEEN_IDS message ids it sent
        self._state_requests, self._counted = 0, False

    def connect(self) -> asyncio.Future:
        if self.subprotocol != V1:  # the client did not offer v1: the page always does
            return self._refused("no v1 subprotocol (offered: %r)" % self.websocket_handler.request.headers.get(
                "Sec-WebSocket-Protocol"))
        if self._sockets[self.kernel_id] >= MAX_SOCKETS:
            return self._refused(f"a socket more than the {MAX_SOCKETS} its kernel may have")
        self._sockets[self.kernel_id] += 1
        self._counted = True
        self.websocket_handler.ws_connection.stream.max_write_buffer_size = self.max_unread
        return super().connect()

    def disconnect(self) -> None:
        if self._counted:
            self._counted = False
            self._sockets[self.kernel_id] -= 1
            if self._sockets[self.kernel_id] <= 0:
                del self._sockets[self.kernel_id]
        super().disconnect()

    def handle_incoming_message(self, incoming_msg) -> None:
        try:
            if self.subprotocol != V1:
                raise FrameError("a frame on a connection without the v1 protocol")
            self._check_like_the_page(check_v1_frame(incoming_msg), len(incoming_msg))
        except FrameError as e:
            self._refuse(str(e))
            return
        super().handle_incoming_message(incoming_msg)

    def _check_like_the_page(self, msg: Message, size: int) -> None:
        """FrameError for what a valid message may do but the page never does (the module's docstring)."""
        msg_id = str(msg.header.get("msg_id"))
        if msg_id in self._seen:
            raise FrameError("a message it had sent before")
        self._seen[msg_id] = None
        if len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        kind, data = msg.header["msg_type"], msg.content.get("data")
        if kind == "comm_open" and msg.content.get("target_name") not in OPENABLE:
            raise FrameError("a comm the page never opens")
        if kind == "comm_msg" and isinstance(data, dict):
            if data.get("method") == "request_states":
                self._state_requests += 1
                if self._state_requests > MAX_STATE_REQUESTS:
                    raise FrameError(f"more than {MAX_STATE_REQUESTS} requests for every widget's state")
            if data.get("method") == "update" and (msg.buffers or size > MAX_UPDATE):
                raise FrameError(f"a widget update of {size} bytes (the page's are a few dozen)")

    def write_message(self, message, binary: bool = False):
        """The handler's write_message (the base class's property), closing a socket whose client has left
        max_unread bytes unread."""
        handler = self.websocket_handler
        try:
            sent = handler.write_message(message, binary=binary)
            # A page that closes as its kernel shuts down leaves this write to fail: nothing to tell it, and asyncio
            # would print "Task exception was never retrieved" with two tracebacks to the server's log.
            sent.add_done_callback(lambda write: write.cancelled() or write.exception())
            return sent
        except StreamBufferFullError:
            self.log.warning("Closing the websocket of kernel %s from %s: it left %d bytes of output unread.",
                             self.kernel_id, handler.request.remote_ip, self.max_unread)
            handler.ws_connection.stream.close()  # no close frame: it would wait behind the unread output

    def _refused(self, what: str) -> asyncio.Future:
        self._refuse(what)
        refused = asyncio.get_running_loop().create_future()
        refused.set_result(None)  # the handler awaits what connect() returns
        return refused

    def _refuse(self, what: str) -> None:
        """Close the socket: a browser running the page never sends this, so the client is not the page."""
        self.log.warning("Closing the websocket of kernel %s from %s: it sent %s.", self.kernel_id,
                         self.websocket_handler.request.remote_ip, what)
        self.websocket_handler.close(POLICY_VIOLATION, "Malformed message")
