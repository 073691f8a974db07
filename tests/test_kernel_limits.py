"""A hostile visitor against a real Voila kernel, speaking to its widgets over the raw websocket as any client
can (tests/wire.py): memory stays bounded whatever photos arrive, one card stores one correction, malformed
messages get nothing back, and no log line, traceback, path or object repr reaches the page. Bounded in
count and time, on loopback only."""
from __future__ import annotations

import json
import shutil
import socket
import time
import uuid

import pytest
import websocket

from browser import ROOT, chromium, kernels, open_app, require_browser, upload_file, upload_files, voila, wait_card
from corpus import bad_uploads, encode, photo, valid_uploads
from wire import V1, channels, cookie_header, get, is_closed, kernel_id, parse, send

BROKEN = "This app's model couldn't be loaded; the site's owner has been told."


def big_png() -> bytes:
    """8000×6000 pixels in 148 KB: small on the wire, 192 MB once decoded (the page's script would shrink it first)."""
    from PIL import Image

    return encode(Image.new("RGB", (8000, 6000), (90, 120, 60)), "PNG")


class Visitor:
    """A raw client of one kernel: its websocket, the widgets it has (model id → state), every message it sent."""

    def __init__(self, url: str):
        _, self.html = get(url + "/")
        self.kernel = kernel_id(self.html)
        self.ws = channels(url, self.kernel)
        self.ws.settimeout(2)
        self.messages: list[dict] = []
        self.raw: list[bytes] = []
        self.widgets: dict[str, dict] = {}
        self.request_states()

    def close(self) -> None:
        self.ws.close()

    def pump(self, until=lambda msg: False, seconds: float = 60) -> dict | None:
        """Read what the kernel sends until `until(message)` holds (that message) or `seconds` pass (None)."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                frame = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            if not isinstance(frame, bytes):
                continue
            self.raw.append(frame)
            msg = parse(frame)
            self.messages.append(msg)
            self._track(msg)
            if until(msg):
                return msg
        return None

    def _track(self, msg: dict) -> None:
        kind, content = msg["header"]["msg_type"], msg["content"]
        data = content.get("data") if isinstance(content, dict) else None
        if kind == "comm_open" and content.get("target_name") == "jupyter.widget":
            self.widgets[content["comm_id"]] = dict(data.get("state", {}))
        elif kind == "comm_msg" and isinstance(data, dict) and data.get("method") == "update":
            self.widgets.setdefault(content["comm_id"], {}).update(data.get("state", {}))
        elif kind == "comm_close":
            self.widgets.pop(content.get("comm_id"), None)
        elif kind == "comm_msg" and isinstance(data, dict) and data.get("method") == "update_states":
            for model_id, widget in data["states"].items():
                self.widgets[model_id] = dict(widget["state"])

    def request_states(self) -> None:
        """Every widget's state, as the page asks for it when it loads (ipywidgets' control comm)."""
        control = uuid.uuid4().hex
        send(self.ws, "comm_open", {"comm_id": control, "target_name": "jupyter.widget.control", "data": {}},
             metadata={"version": "1.0.0"})
        send(self.ws, "comm_msg", {"comm_id": control, "data": {"method": "request_states"}})
        got = self.pump(lambda m: isinstance(m["content"].get("data"), dict)
                        and m["content"]["data"].get("method") == "update_states", seconds=60)
        assert got, "the kernel did not send its widgets' states"

    def find(self, test) -> str:
        return next(model_id for model_id, state in self.widgets.items() if test(state))

    @property
    def photo_input(self) -> str:
        return self.find(lambda s: "max_files" in s)

    @property
    def status(self) -> str:
        return self.widgets[self.find(lambda s: "bear-status" in s.get("_dom_classes", ()))].get("value", "")

    def custom(self, comm_id: str, content, buffers: list[bytes] = ()) -> None:
        send(self.ws, "comm_msg", {"comm_id": comm_id, "data": {"method": "custom", "content": content}}, buffers)

    def update(self, comm_id: str, state: dict) -> None:
        send(self.ws, "comm_msg", {"comm_id": comm_id, "data": {"method": "update", "state": state}})

    def upload(self, files: list[tuple[str, bytes]]) -> None:
        """A batch as photo_input.js sends it, then wait until the kernel says it is done."""
        self.custom(self.photo_input, {"kind": "batch", "count": len(files), "total": len(files)})
        for name, data in files:
            self.custom(self.photo_input, {"kind": "photo", "name": name, "size": len(data)}, [data])
        what = "1 photo" if len(files) == 1 else f"{len(files)} photos"
        started = []  # the status still says the last batch's "Done" until this one starts: wait for it to start

        def done(_message) -> bool:
            started.extend(["yes"] if "Classifying" in self.status or "Loading" in self.status else [])
            return bool(started) and f"Done: {what}." in self.status

        assert self.pump(done, seconds=300), self.status

    def pong(self) -> bool:
        """Whether the photo input still answers: an empty batch, whose receipt the kernel says at once."""
        self.probes = getattr(self, "probes", 0) + 1
        said = {"kind": "received", "id": f"probe-{self.probes}"}
        self.custom(self.photo_input, {"kind": "batch", "id": said["id"], "count": 0, "total": 0})
        return self.pump(lambda m: m["content"].get("data", {}).get("content") == said, 30) is not None


def rss_mib(proc, kernel: str) -> float:
    [mine] = [k for k in kernels(proc) if any(kernel in part for part in k.cmdline())]
    return mine.memory_info().rss / 2**20


def leaks(visitor: Visitor) -> list[str]:
    """What a visitor must never get: output streams (log lines), errors, tracebacks, paths, object reprs."""
    found = [m["header"]["msg_type"] for m in visitor.messages if m["header"]["msg_type"] in ("stream", "error")]
    for frame in visitor.raw:
        found += [word for word in ("Traceback", str(ROOT), "object at 0x", "bear_classifier INFO") if word.encode() in frame]
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db = tmp_path_factory.mktemp("feedback") / "feedback.db"
    with voila(env={"BEAR_FEEDBACK_DB": str(db)}) as (url, log, proc):
        yield url, log, proc, db


def test_memory_stays_bounded_after_100_photos_of_every_kind(server):
    url, log, proc, _ = server
    visitor = Visitor(url)
    try:
        visitor.upload([("warm-up.jpg", encode(photo(), "JPEG"))])
        before = rss_mib(proc, visitor.kernel)
        png = big_png()
        visitor.upload([(f"big{i}.png", png) for i in range(3)])
        three = rss_mib(proc, visitor.kernel) - before
        kinds = [(name, data) for name, data, _ in valid_uploads() + bad_uploads()] + [("big.png", png)] * 6
        for start in range(0, 100, 20):
            visitor.upload([kinds[(start + i) % len(kinds)] for i in range(20)])
        after = rss_mib(proc, visitor.kernel)
        print(f"kernel RSS: {before:.0f} MiB after one photo, +{three:.0f} MiB after three 8000×6000 PNGs, "
              f"{after:.0f} MiB after 100 more photos")  # bench/memory.py measures the same, in more detail
        assert three < 100 and after < 400, (three, after)
        cards = [s for s in visitor.widgets.values() if "short" in s and "error" in s]  # card.py's Card traits
        assert len(cards) == 24 and "removed" in json.dumps(visitor.widgets)  # the oldest were closed, with a sentence
        assert visitor.pong() and leaks(visitor) == []
    finally:
        visitor.close()


def test_a_socket_that_never_reads_is_closed_before_the_server_holds_much_for_it():
    """The server keeps what a socket can't deliver, and a kernel's output goes to each of its sockets: one left
    unread would grow the server without end. It is closed at guard.MAX_UNREAD bytes unread (256 KB here, so that
    a few batches of cards go past the system's own buffers); the page on the other socket goes on."""
    with voila("--SafeChannels.max_unread=262144") as (url, log, _):  # above every widget's state, sent at once
        visitor = Visitor(url)
        quiet = websocket.create_connection(url.replace("http", "ws", 1) + f"/api/kernels/{visitor.kernel}/channels",
                                            subprotocols=[V1], cookie=cookie_header(), timeout=10,
                                            sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
        try:
            for batch in range(12):  # ~0.7 MB of cards each
                visitor.upload([(f"{batch}-{i}.jpg", encode(photo(seed=20 * batch + i), "JPEG")) for i in range(20)])
                if "of output unread" in log.read_text():
                    break
            assert "of output unread" in log.read_text() and is_closed(quiet, within=30)
            assert visitor.pong()
        finally:
            quiet.close()
            visitor.close()


def test_three_8000x6000_pngs_through_the_page_grow_the_kernel_by_under_100_mib(server):
    require_browser()
    url, _, proc, _ = server
    png = big_png()
    with chromium() as browser:
        page = open_app(browser, url)
        kernel = page.evaluate("document.body.dataset.kernelId")
        upload_file(page, "warm-up.jpg", encode(photo(), "JPEG"), "image/jpeg")
        wait_card(page, "warm-up.jpg")
        before = rss_mib(proc, kernel)
        upload_files(page, *[(f"big{i}.png", png, "image/png") for i in range(3)])
        page.get_by_text("Done: 3 photos.").wait_for(timeout=120_000)
        assert all("Prediction: " in wait_card(page, f"big{i}.png") for i in range(3))
        grown = rss_mib(proc, kernel) - before
    print(f"three 8000×6000 PNGs through the page: +{grown:.0f} MiB")
    assert grown < 100, grown


MALFORMED = [  # (content, buffers) of a custom message to the photo input
    (["not", "a", "dict"], []), ("photo", []), (None, []), ({}, []),
    ({"kind": "batch", "count": 10**30, "total": -1}, []),  # huge and negative counts
    ({"kind": "batch", "count": "20", "total": [1]}, []),  # counts of the wrong type
    ({"kind": "photo", "name": {"a": 1}, "size": "big"}, [b"\x89PNG"]),  # fields of the wrong type
    ({"kind": "photo", "name": "x" * 10_000, "size": 1e300}, [b"1"] * 12),  # a huge name, size and buffer count
    ({"kind": "eval", "code": "1/0"}, []),  # an unknown kind
]


def test_malformed_photo_input_messages_get_nothing_back_and_the_page_goes_on(server):
    url, _, _, _ = server
    visitor = Visitor(url)
    try:
        for content, buffers in MALFORMED:
            visitor.custom(visitor.photo_input, content, buffers)
        send(visitor.ws, "comm_msg", {"comm_id": visitor.photo_input, "data": {"no": "method"}})
        send(visitor.ws, "comm_msg", {"comm_id": visitor.photo_input, "data": "not a dict"})
        visitor.update(visitor.photo_input, {"max_files": "all"})
        assert visitor.pong(), "the photo input no longer answers"
        visitor.upload([("after.jpg", encode(photo(seed=3), "JPEG"))])
        assert "Photo 1 of 1: " in visitor.status
        assert leaks(visitor) == []
    finally:
        visitor.close()


def test_no_log_line_traceback_or_object_repr_reaches_the_page(server):
    url, log, _, _ = server
    visitor = Visitor(url)
    try:
        assert b"object at 0x" not in visitor.html and b"PhotoInput" not in visitor.html
        visitor.upload([("a.jpg", encode(photo(), "JPEG")), ("notes.pdf", b"%PDF-1.4 nothing"), ("b.png", encode(photo(), "PNG"))])
        assert leaks(visitor) == []
    finally:
        visitor.close()
    assert "classified a photo" in log.read_text()  # the log lines went to the server's log instead


def test_one_card_stores_one_correction_whatever_the_client_sends(server):
    """8 changes of the answer and 5 more sends of the last one, over the comm, as fast as it takes them: one row.
    The page shows one choice at a time; only the kernel can make that hold."""
    from bear_classifier.page.feedback import FeedbackStore

    url, _, _, db = server
    store = FeedbackStore(f"sqlite:///{db}", per_minute=None)
    before = len(store.all())
    visitor = Visitor(url)
    try:
        visitor.upload([("flag-me.jpg", encode(photo(seed=7), "JPEG"))])
        card = visitor.find(lambda s: bool(s.get("choices")))  # the answer card, with its "That's wrong" choices
        labels = [label for label, _ in visitor.widgets[card]["choices"]]
        for i in range(13):
            visitor.custom(card, {"kind": "flag", "label": labels[min(i, 7) % len(labels)]})
            visitor.pump(lambda m: False, seconds=0.3)
        rows = store.all()[before:]
        assert len(rows) == 1, [r.label for r in rows]
        assert leaks(visitor) == []
    finally:
        visitor.close()


@pytest.mark.parametrize("breakage", ["a-directory", "a-broken-model-card", "a-tampered-file"])
def test_a_model_that_cannot_be_loaded_is_said_before_any_upload(tmp_path, breakage):
    model = tmp_path / "export.onnx"
    if breakage == "a-directory":
        model.mkdir()
        shutil.copy(ROOT / "export.json", tmp_path / "export.json")
    else:
        shutil.copy(ROOT / "export.onnx", model)
        card = (ROOT / "export.json").read_text()
        (tmp_path / "export.json").write_text("{\n" if breakage == "a-broken-model-card" else card)
        if breakage == "a-tampered-file":
            with open(model, "r+b") as f:
                f.seek(-100, 2)
                f.write(b"\0" * 10)
    with voila(env={"BEAR_MODEL": str(model), "BEAR_FEEDBACK": "off"}) as (url, log, _):
        visitor = Visitor(url)
        try:
            assert visitor.pump(lambda m: BROKEN.replace("'", "&#x27;") in visitor.status or BROKEN in visitor.status,
                                seconds=60), visitor.status
            visitor.upload([("a.jpg", encode(photo(), "JPEG"))])
            assert BROKEN in json.dumps(visitor.widgets, ensure_ascii=False)
            for detail in ("Errno", "Expecting value", "sha256", "git checkout", str(tmp_path)):
                assert not any(detail.encode() in frame for frame in visitor.raw), detail
            assert leaks(visitor) == []
        finally:
            visitor.close()
        assert "loading the model failed" in log.read_text()
