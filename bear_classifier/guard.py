"""What the server lets a visitor's browser do over the kernel websocket, checked before jupyter_server parses it.

jupyter_server 2.21 and Voila 0.5.13 trust the counts and offsets at the start of a binary frame:
`deserialize_msg_from_ws_v1` loops over the part count the client sent (2**62 parts from 8 bytes),
and the legacy protocol's `deserialize_binary_message` builds a struct format of the count it reads
(0x7fffffff from 12 bytes). Either freezes the whole server and fills its memory (docs/security.md).
`SafeChannels`, set as the `kernel_websocket_connection_class` in voila.json (and in the Jupyter
server's config on Binder), bounds every count and offset by the frame's own length first, speaks
only the v1 protocol the page uses, and closes the socket of a client that sends anything else.
"""
from __future__ import annotations

import asyncio
import json

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

V1 = "v1.kernel.websocket.jupyter.org"
CHANNELS = ("shell", "control", "stdin", "iopub")
MAX_BUFFERS = 16  # a photo is one buffer; nothing the page sends has more
# A v1 frame: an 8-byte count n, then n 8-byte offsets, then n - 1 parts: the channel, the header,
# parent header, metadata, content, and any binary buffers. The last offset is the frame's end.
MIN_OFFSETS, MAX_OFFSETS = 6, 6 + MAX_BUFFERS
POLICY_VIOLATION = 1008  # websocket close code: the message broke the server's rules


class FrameError(ValueError):
    """A websocket frame that is not a well-formed v1 kernel message; str(error) says what is wrong."""


def check_v1_frame(frame: bytes | str) -> None:
    """Raise FrameError unless `frame` is a well-formed v1 kernel message. Reads at most the offset table,
    and only after bounding its length by the frame's, so no frame costs more than its own size."""
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
    try:
        header = json.loads(frame[offsets[1]:offsets[2]])
    except (ValueError, UnicodeDecodeError):
        raise FrameError("a header that is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("msg_type"), str):
        raise FrameError("a header without a message type")


class SafeChannels(ZMQChannelsWebsocketConnection):
    """The kernel websocket, speaking the v1 protocol only, with every frame checked before it is parsed."""

    def connect(self) -> asyncio.Future:
        if self.subprotocol != V1:  # the client did not offer v1: the page always does
            self._refuse("no v1 subprotocol (offered: %r)" % self.websocket_handler.request.headers.get(
                "Sec-WebSocket-Protocol"))
            refused = asyncio.get_running_loop().create_future()
            refused.set_result(None)  # the handler awaits what connect() returns
            return refused
        return super().connect()

    def handle_incoming_message(self, incoming_msg) -> None:
        try:
            if self.subprotocol != V1:
                raise FrameError("a frame on a connection without the v1 protocol")
            check_v1_frame(incoming_msg)
        except FrameError as e:
            self._refuse(str(e))
            return
        super().handle_incoming_message(incoming_msg)

    def _refuse(self, what: str) -> None:
        """Close the socket: a browser running the page never sends this, so the client is not the page."""
        self.log.warning("Closing the websocket of kernel %s from %s: it sent %s.", self.kernel_id,
                         self.websocket_handler.request.remote_ip, what)
        self.websocket_handler.close(POLICY_VIOLATION, "Malformed message")
