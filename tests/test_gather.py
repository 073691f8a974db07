"""The downloader against a real HTTP server on 127.0.0.1: good, broken, HTML, slow, 404, huge."""
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bear_classifier.classes import Classes
from bear_classifier.training.gather import download_images, gather
from corpus import HTML, encode, photo

GOOD = [encode(photo((200, 150), seed=s), "JPEG") for s in range(3)]


class Handler(BaseHTTPRequestHandler):
    hits: dict = {}

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, code: int, body: bytes, ctype: str = "image/jpeg", length: int | None = None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeouts): expected
            pass

    def do_GET(self):
        Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        p = self.path
        if p.startswith("/good/"):
            self._send(200, GOOD[int(p.rsplit("/", 1)[1])])
        elif p == "/dup":
            self._send(200, GOOD[0])
        elif p == "/broken.jpg":
            self._send(200, GOOD[0][:300])
        elif p == "/page.html":
            self._send(200, HTML, "text/html; charset=utf-8")
        elif p == "/slow.jpg":
            time.sleep(3)
            self._send(200, GOOD[1])
        elif p == "/huge.jpg":
            self._send(200, b"\xff" * 1000, length=50 * 2**20)
        elif p == "/flaky.jpg":  # fails once with a 503, then works: must be retried
            if Handler.hits[p] == 1:
                self._send(503, b"busy", "text/plain")
            else:
                self._send(200, GOOD[2])
        else:
            self._send(404, b"not found", "text/plain")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_downloader_keeps_good_images_and_skips_every_kind_of_failure(server, tmp_path):
    urls = {name: f"{server}/{name}" for name in
            ["good/0", "good/1", "dup", "broken.jpg", "page.html", "slow.jpg", "missing.jpg", "huge.jpg", "flaky.jpg"]}
    # slow.jpg answers after 3 s: a 2 s timeout gives it up, and leaves a busy 2-core machine room for the rest
    results = {r.url: r for r in download_images(list(urls.values()), tmp_path, timeout=2, retries=1,
                                                 max_bytes=2**20, progress=False)}
    ok = {name for name, u in urls.items() if results[u].path is not None}
    assert ok == {"good/0", "good/1", "dup", "flaky.jpg"}, {n: results[u].error for n, u in urls.items()}
    assert "damaged" in results[urls["broken.jpg"]].error
    assert "not an image" in results[urls["page.html"]].error
    assert "HTTP 404" in results[urls["missing.jpg"]].error
    assert "too large" in results[urls["huge.jpg"]].error
    assert "timed out" in results[urls["slow.jpg"]].error.lower()
    assert Handler.hits["/missing.jpg"] == 1  # a 404 is final: no retry
    # Content-hash names: the duplicate landed on the same file, so three files in all.
    assert results[urls["dup"]].path == results[urls["good/0"]].path
    assert len(list(tmp_path.glob("*.jpg"))) == 3


def test_rerun_does_not_duplicate(server, tmp_path):
    urls = [f"{server}/good/0", f"{server}/good/1"]
    download_images(urls, tmp_path, progress=False)
    download_images(urls, tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.jpg"))) == 2


def test_gather_searches_each_class_and_fills_its_folder(server, tmp_path):
    queries = []

    def fake_search(query, max_images):
        queries.append(query)
        return [f"{server}/good/{i}" for i in range(min(max_images, 3))]

    monkeys = Classes.from_dict({"class": [{"label": "howler", "search": "howler monkey"},
                                           {"label": "proboscis", "name": "Proboscis monkey"}]})
    results = gather(tmp_path, monkeys, per_class=2, search=fake_search, progress=False)
    assert sorted(queries) == ["howler monkey", "proboscis monkey"]  # the query, else the name
    for label in ["howler", "proboscis"]:
        assert len(list((tmp_path / label).glob("*.jpg"))) == 2
        assert all(r.path for r in results[label])
