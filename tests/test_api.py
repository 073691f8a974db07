"""The HTTP API on the page's own server, for real: `voila app.ipynb` as `make app` serves it, the real model
(export.onnx), the photos in examples/, and hostile requests sent by the test to 127.0.0.1."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from browser import voila
from conftest import IN_CI, ROOT
from corpus import PDF, bad_uploads, encode, photo, png_bomb

EXAMPLES = sorted((ROOT / "examples").glob("*.jpg"))
# Small limits where a test must reach them; the rest are the defaults a deployer gets.
LIMITS = {"BEAR_API_PER_MINUTE": "100", "BEAR_API_CONCURRENT": "1", "BEAR_API_QUEUE": "7",
          "BEAR_API_WAIT_SECONDS": "2", "BEAR_API_BODY_SECONDS": "6"}  # 6 s: eight 19 MB bodies arrive whole on a busy machine


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(url, server process): Voila serving app.ipynb with voila.json's settings; its API's model loaded."""
    env = {**LIMITS, "BEAR_FEEDBACK_DB": str(tmp_path_factory.mktemp("feedback") / "f.db"), "PYTHONPATH": str(ROOT)}
    with voila("--VoilaConfiguration.preheat_kernel=False", env=env) as (url, log, proc):
        deadline = time.time() + 60
        while call(url, "GET", "/api/ready")[0] != 200:
            assert time.time() < deadline and proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        yield url, proc
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def call(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 60) -> tuple[int, dict, object]:
    """(status, headers (any case), JSON body or text) of one request. It comes from the test's own address, as a
    proxy on this machine would say it (X-Forwarded-For): each test has a rate per minute of its own."""
    headers = {"X-Forwarded-For": own_address(), **(headers or {})}
    request = urllib.request.Request(url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            status, head, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, head, raw = e.code, e.headers, e.read()
    kind = head.get("Content-Type", "")
    return status, head, json.loads(raw) if kind.startswith("application/json") else raw.decode()


def own_address() -> str:
    """An address of the running test's own (its name's hash)."""
    import hashlib
    import os

    digest = hashlib.sha256(os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0].encode()).digest()
    return f"10.{digest[0]}.{digest[1]}.{digest[2]}"


def multipart(files: list[tuple[str, bytes]], boundary: str = "b0und4ry") -> tuple[bytes, dict]:
    parts = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
                     f"Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n" for name, data in files)
    return parts + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def local_answers() -> dict:
    """Each example's answer from the model loaded here, read the way the page reads it (inference.answer)."""
    from bear_classifier.inference.answer import answer_bytes
    from bear_classifier.inference.predict import Classifier

    model = Classifier.load(ROOT / "export.onnx")
    return {p.name: answer_bytes(model, p.read_bytes())[1] for p in EXAMPLES}


def sentence(data: bytes) -> str:
    """What the page says of a file that is no photo."""
    from bear_classifier.inference.answer import read_photo
    from bear_classifier.inference.images import ImageError

    with pytest.raises(ImageError) as refused:
        read_photo(data)
    return str(refused.value)


def test_several_photos_in_one_request_get_the_pages_answers_and_the_models_version(server):
    url, _ = server
    card = json.loads((ROOT / "export.json").read_text())
    body, headers = multipart([(p.name, p.read_bytes()) for p in EXAMPLES] + [("notes.txt", b"bears are big\n")])
    status, _, answer = call(url, "POST", "/api/classify", body, headers)
    assert status == 200, answer
    results = answer["results"]
    assert [r["name"] for r in results] == [p.name for p in EXAMPLES] + ["notes.txt"]
    assert results[-1] == {"name": "notes.txt", "error": sentence(b"bears are big\n")}
    words = {"black": "Black bear", "grizzly": "Grizzly bear", "teddy": "Teddy bear", "not_bear": "Not a bear"}
    for result, (name, local) in zip(results, local_answers().items()):
        assert result["label"] == local.label and result["words"] == words[local.label], (name, result)
        assert result["probability"] == pytest.approx(local.probability, abs=1e-5)
        assert result["probabilities"] == pytest.approx(local.probs, abs=1e-5)
        assert result["none_of_these"] == (local.label == "not_bear")
        assert result["model"] == {"name": f"{card['exported']}-{card['serving']['sha256'][:8]}",
                                   "sha256": card["serving"]["sha256"], "date": card["exported"]}
    assert {r["label"] for r in results[:-1]} == {"black", "grizzly", "teddy", "not_bear"}


def test_one_photo_as_the_body_with_its_heatmap(server):
    url, _ = server
    data = (ROOT / "examples" / "grizzly.jpg").read_bytes()
    status, _, answer = call(url, "POST", "/api/classify?heatmap=1&name=g.jpg", data, {"Content-Type": "image/jpeg"})
    assert status == 200, answer
    result = answer["results"][0]
    assert result["name"] == "g.jpg" and result["label"] == "grizzly"
    heat = Image.open(io.BytesIO(base64.b64decode(result["heatmap_png"])))
    size = Image.open(io.BytesIO(data)).size
    assert heat.format == "PNG" and heat.mode == "L" and max(heat.size) <= 448
    assert abs(heat.width / heat.height - size[0] / size[1]) < 0.02  # the photo's shape, to lay over it
    assert heat.getextrema() == (0, 255)  # stretched: where it looked most is white
    status, _, plain = call(url, "POST", "/api/classify", data, {"Content-Type": "application/octet-stream"})
    assert "heatmap_png" not in plain["results"][0]


def test_files_that_are_no_photos_get_the_pages_sentences_never_a_traceback(server):
    url, _ = server
    for name, data, phrase in bad_uploads():
        if len(data) > 20 * 2**20:
            continue  # over the request's limit: the next test
        status, _, answer = call(url, "POST", f"/api/classify?name={name}", data, {"Content-Type": "image/jpeg"})
        assert status == 422, (name, answer)
        assert answer["error"] == sentence(data) and phrase.lower() in answer["error"].lower(), (name, answer)
        assert answer["results"] == [{"name": name, "error": answer["error"]}]


def test_a_picture_too_small_to_tell_gets_a_sentence_and_one_just_big_enough_an_answer(server):
    from PIL import ImageOps

    url, _ = server
    grizzly = Image.open(ROOT / "examples" / "grizzly.jpg").convert("RGB")
    small = encode(ImageOps.fit(grizzly, (40, 16)), "PNG")  # a 16-pixel grizzly is "not a bear" to the model
    status, _, answer = call(url, "POST", "/api/classify?name=tiny.png", small, {"Content-Type": "image/png"})
    assert status == 422 and answer["error"].startswith("The image is too small to tell what it shows (40×16 pixels")
    request = urllib.request.Request(url + "/api/classify", data=small, headers={"X-Forwarded-For": own_address()})
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(request, timeout=60)
    assert "(40×16 pixels" in raw.value.read().decode("utf-8")  # as written, for someone reading curl's output
    status, _, answer = call(url, "POST", "/api/classify", encode(ImageOps.fit(grizzly, (48, 32)), "PNG"),
                             {"Content-Type": "image/png"})
    assert status == 200 and answer["results"][0]["label"] == "grizzly"


def test_wrong_requests_get_a_4xx_and_a_sentence(server):
    url, _ = server
    jpeg = (ROOT / "examples" / "coffee.jpg").read_bytes()
    for kind in ("text/plain", "application/json", "application/xml", "text/html"):
        status, _, answer = call(url, "POST", "/api/classify", b'{"image": "x"}', {"Content-Type": kind})
        assert status == 415 and f"not {kind}" in answer["error"] and "multipart/form-data" in answer["error"]
    body, headers = multipart([])
    status, _, answer = call(url, "POST", "/api/classify", body, headers)
    assert status == 400 and answer["error"].startswith("There is no image in this request.")
    status, _, answer = call(url, "POST", "/api/classify", b"", {})  # a POST with no body at all
    assert status == 400 and answer["error"].startswith("There is no image in this request.")
    status, _, answer = call(url, "POST", "/api/classify", b"--x\r\ngarbage", {"Content-Type": "multipart/form-data"})
    assert status == 400 and "no image" in answer["error"] and answer["error"].count("Invalid multipart") < 2
    body, headers = multipart([(f"{i}.jpg", jpeg) for i in range(9)])
    status, _, answer = call(url, "POST", "/api/classify", body, headers)
    assert status == 413 and answer["error"] == ("Too many images in one request (9; the limit is 8). Please send "
                                                 "the others in another request.")
    status, _, answer = call(url, "GET", "/api/classify")
    assert status == 405 and "api/docs" in answer["error"]
    status, _, answer = call(url, "OPTIONS", "/api/classify", headers={"Origin": "https://elsewhere.example"})
    assert status == 403 and "BEAR_API_CORS" in answer["error"]  # CORS is off unless the deployer names origins
    status, head, _ = call(url, "POST", "/api/classify", jpeg, {"Content-Type": "image/jpeg",
                                                                "Origin": "https://elsewhere.example"})
    assert status == 200 and "Access-Control-Allow-Origin" not in head


def raw(url: str, head: bytes, chunks=(), pause: float = 0.0, timeout: float = 20) -> tuple[bytes, float]:
    """Send a request as bytes (the body chunk by chunk, `pause` s apart); (the answer, seconds until it came)."""
    port = int(url.rsplit(":", 1)[1])
    start = time.time()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        try:
            for chunk in chunks:
                s.sendall(chunk)
                time.sleep(pause)
        except OSError:
            pass  # refused midway: the answer is already there
        try:
            return s.recv(65536), time.time() - start
        except OSError:
            return b"", time.time() - start


def test_a_huge_body_is_refused_before_it_is_read(server):
    url, _ = server
    mib = b"\xff" * 2**20
    answer, seconds = raw(url, b"POST /api/classify HTTP/1.1\r\nHost: a\r\nContent-Type: image/jpeg\r\n"
                               b"Content-Length: 2000000000\r\n\r\n", [mib] * 3)
    assert answer.startswith(b"HTTP/1.1 413") and b"The request is too large (1907.3 MB; the limit is 20 MB" in answer
    chunked = (f"{len(mib):x}\r\n".encode() + mib + b"\r\n" for _ in range(60))
    answer, _ = raw(url, b"POST /api/classify HTTP/1.1\r\nHost: a\r\nContent-Type: image/jpeg\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n", chunked)
    assert answer.startswith(b"HTTP/1.1 413") and b"over the limit of 20 MB" in answer, answer[:300]
    assert call(url, "GET", "/api/health")[0] == 200


def test_slow_bodies_hold_no_turn_and_are_cut(server):
    """Two clients at one address trickle their bodies: they hold that address's share of the places, so a third
    request from it is told the server is busy; a photo from elsewhere is answered meanwhile; the slow ones are cut
    after BEAR_API_BODY_SECONDS (6 s here)."""
    url, _ = server
    slow_address = "198.51.100.20"
    head = (b"POST /api/classify HTTP/1.1\r\nHost: a\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n"
            b"X-Forwarded-For: %s\r\n\r\n" % slow_address.encode())
    photo_bytes = (ROOT / "examples" / "rocket.jpg").read_bytes()
    with ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(raw, url, head, [b"\xff" * 10] * 100, 0.1) for _ in range(2)]
        time.sleep(0.5)  # the slow bodies have started
        start = time.time()
        status, _, answer = call(url, "POST", "/api/classify", photo_bytes, {"Content-Type": "image/jpeg"})
        assert status == 200 and time.time() - start < 2.5, answer
        status, head_, answer = call(url, "POST", "/api/classify", photo_bytes,
                                     {"Content-Type": "image/jpeg", "X-Forwarded-For": slow_address})
        assert status == 503 and int(head_["Retry-After"]) >= 1 and answer["error"].startswith("The server is busy")
        for future in slow:
            answer, seconds = future.result()
            assert answer == b"" and 5.5 < seconds < 9.5, (answer[:100], seconds)  # closed, unanswered, before the
            # trickle's 10 s were sent
    assert call(url, "GET", "/api/health")[0] == 200


def test_large_bodies_at_once_stay_within_the_servers_budget(server):
    """Eight bodies of 19 MB sent at once from eight addresses: the server holds at most four at a time (80 MB); the
    others are told it is busy, the held ones get their sentence, and the server grew by less than the eight."""
    import psutil

    url, proc = server
    server_process, peak, done = psutil.Process(proc.pid), [], threading.Event()
    before = server_process.memory_info().rss

    def watch() -> None:
        while not done.wait(0.01):
            peak.append(server_process.memory_info().rss)

    size = 19 * 2**20
    heads = [b"POST /api/classify HTTP/1.1\r\nHost: a\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n"
             b"X-Forwarded-For: 198.51.100.%d\r\nConnection: close\r\n\r\n" % (size, 30 + i) for i in range(8)]
    chunk = b"\x00" * 2**20
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = [a for a, _ in pool.map(lambda h: raw(url, h, [chunk] * 19), heads)]
    finally:
        done.set()
        watcher.join()
    statuses = sorted(a[9:12] for a in answers)
    assert set(statuses) <= {b"422", b"503"} and b"503" in statuses, answers
    grown = max(peak) - before
    assert grown < 6 * size, f"the server grew {grown / 2**20:.0f} MiB at its peak"
    assert call(url, "GET", "/api/health")[0] == 200


def test_decompression_bombs_get_a_sentence_and_cost_the_server_nothing(server):
    import psutil

    url, proc = server
    before = psutil.Process(proc.pid).memory_info().rss
    flat = io.BytesIO()
    Image.new("L", (10000, 6000)).save(flat, "PNG")  # 60 MP in 60 KB
    for bomb, said in [(png_bomb(), "far too large (too many pixels)"), (flat.getvalue(), "10000×6000 pixels")]:
        status, _, answer = call(url, "POST", "/api/classify", bomb, {"Content-Type": "image/png"})
        assert status == 422 and said in answer["error"], answer
    grown = psutil.Process(proc.pid).memory_info().rss - before
    assert grown < 100 * 2**20, f"the server grew {grown / 2**20:.0f} MiB"


def test_a_thousand_requests_from_one_address_get_429_beyond_its_rate_and_others_are_still_served(server):
    """1,000 photos as fast as one client can send them, from one address (HAProxy's X-Forwarded-For, as the server
    believes it from a proxy on this machine): 100 a minute are answered, the rest told when to come back."""
    url, _ = server
    small = encode(photo((64, 48)), "JPEG")
    flood = {"Content-Type": "image/jpeg", "X-Forwarded-For": "198.51.100.7"}
    start = time.time()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: call(url, "POST", "/api/classify", small, flood), range(1000)))
    elapsed = time.time() - start
    statuses = [status for status, _, _ in answers]
    # Within its rate, a request is answered, or told the server is busy (one turn, two places an address: LIMITS).
    allowed = statuses.count(200) + statuses.count(503)
    assert statuses.count(429) == 1000 - allowed and statuses.count(200) >= 3, set(statuses)
    assert 100 <= allowed <= 100 + elapsed * 100 / 60 + 1, (allowed, elapsed)
    for status, head, answer in answers:
        if status == 429:
            assert 1 <= int(head["Retry-After"]) <= 60
            assert answer["error"].startswith("Too many requests from your address (the limit is 100 a minute).")
    status, _, answer = call(url, "POST", "/api/classify", small, {**flood, "X-Forwarded-For": "198.51.100.8"})
    assert status == 200, answer  # another address is served
    assert call(url, "GET", "/api/health")[0] == 200


def test_beyond_capacity_requests_get_503_with_retry_after_and_the_client_waits_its_turn(server, caplog):
    """One turn and seven places in the queue (LIMITS), two of the eight for one address: twelve requests of eight
    photos at once from one address."""
    url, _ = server
    body, headers = multipart([(p.name, p.read_bytes()) for p in EXAMPLES[:4]] * 2)
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: call(url, "POST", "/api/classify", body, headers), range(12)))
    statuses = [status for status, _, _ in answers]
    assert set(statuses) == {200, 503}, statuses
    for status, head, answer in answers:
        if status == 503:
            assert int(head["Retry-After"]) >= 1 and answer["error"].startswith("The server is busy")
        else:
            assert [r["label"] for r in answer["results"]] == ["black", "not_bear", "not_bear", "grizzly"] * 2

    from bear_classifier import Client

    client = Client(url, retries=8)
    with caplog.at_level("INFO", logger="bear_classifier.api.client"), ThreadPoolExecutor(6) as pool:
        labels = list(pool.map(lambda p: client.classify(p).label, EXAMPLES))
    assert labels == ["black", "not_bear", "not_bear", "grizzly", "not_bear", "teddy"]
    assert re.search(r"answered 503; trying again in [1-9]", caplog.text), caplog.text  # as Retry-After said


def test_model_health_and_readiness(server):
    url, _ = server
    from bear_classifier.inference.predict import served_classes

    classes = served_classes(ROOT / "export.onnx")
    status, _, model = call(url, "GET", "/api/model")
    assert status == 200
    assert model["classes"] == [{"label": k.label, "words": k.name} for k in classes.kinds]
    assert model["none_of_these"]["label"] == classes.none_label and model["title"] == classes.title
    card = json.loads((ROOT / "export.json").read_text())
    assert model["figures"]["valid_metrics"]["accuracy"] == card["valid_metrics"]["accuracy"]
    assert model["version"]["sha256"] == card["serving"]["sha256"]
    assert call(url, "GET", "/api/health")[:3:2] == (200, {"status": "ok"})
    status, _, ready = call(url, "GET", "/api/ready")
    assert status == 200 and ready["model"] == model["version"]
    from bear_classifier import Client

    assert Client(url).ready() and Client(url).model() == model


def test_the_openapi_document_validates_and_names_this_server(server):
    from openapi_spec_validator import validate

    url, _ = server
    status, _, doc = call(url, "GET", "/api/openapi.json")
    assert status == 200
    validate(doc)
    assert doc["openapi"] == "3.1.0" and doc["servers"] == [{"url": url}]
    for path, ops in doc["paths"].items():
        if "get" in ops:
            assert call(url, "GET", path)[0] == 200, path


def test_the_use_via_api_page_runs_its_own_examples_and_the_page_links_to_it(server, tmp_path):
    url, _ = server
    status, head, page = call(url, "GET", "/api/docs")
    assert status == 200 and head["Content-Type"].startswith("text/html")
    assert "script-src" not in head["Content-Security-Policy"] and "default-src 'none'" in head["Content-Security-Policy"]
    assert "<script" not in page and not re.findall(r'(?:src|href)="https?://(?!127\.0\.0\.1)', page)
    labels = re.search(r"<p>The labels: (.*?)</p>", page).group(1)  # every label an answer can carry
    answered = call(url, "POST", "/api/classify", (ROOT / "examples" / "grizzly.jpg").read_bytes(),
                    {"Content-Type": "image/jpeg"})[2]["results"][0]
    assert re.findall(r"<code>(\w+)</code>", labels) == list(answered["probabilities"])
    examples = [html_unescape(code) for code in re.findall(r"<pre><code>(.*?)</code></pre>", page, re.S)]
    assert len(examples) == 4 and all(url in e for e in examples), examples
    shutil.copy(ROOT / "examples" / "grizzly.jpg", tmp_path / "photo.jpg")
    curl_lines = [e for e in examples if e.startswith("curl")]
    if not shutil.which("curl") and IN_CI:
        pytest.fail("CI must run every test, but curl is missing (apt-get install curl)")
    if shutil.which("curl"):  # elsewhere the Python examples alone run
        for line in curl_lines:
            out = subprocess.run(line, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60).stdout
            assert json.loads(out)["results"][0]["label"] == "grizzly", line
    for code in (e for e in examples if not e.startswith("curl")):
        r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                           env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        assert r.returncode == 0 and "grizzly" in r.stdout.lower(), (code, r.stderr[-2000:])
    home = urllib.request.urlopen(url + "/", timeout=120).read().decode()
    assert '<footer id="bear-footer"><a href="/api/docs">Use via API</a></footer>' in home


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


def test_the_client_and_predict_url_print_what_the_local_predict_prints(server, tmp_path):
    url, _ = server
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    (tmp_path / "empty.jpg").write_bytes(b"")  # its sentence, then the next photo: not "no image in this request"
    photos = [str(tmp_path / "empty.jpg"), *map(str, EXAMPLES[:3]), str(notes), str(tmp_path / "missing.jpg")]
    cli = [sys.executable, "-m", "bear_classifier", "predict"]
    local = subprocess.run([*cli, *photos, "--heatmap", tmp_path / "local"], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    remote = subprocess.run([*cli, "--url", url, *photos, "--heatmap", tmp_path / "remote"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert remote.returncode == local.returncode == 1
    assert remote.stdout == local.stdout and len(local.stdout.splitlines()) == 3
    assert remote.stderr == local.stderr and "Traceback" not in remote.stderr
    written = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "remote").iterdir()) and len(written) == 6
    for name in written:  # the server's map is sent at 448 px at most: the same picture, within a grey level
        here, there = (np.asarray(Image.open(tmp_path / d / name), dtype=float) for d in ("local", "remote"))
        assert here.shape == there.shape and np.abs(here - there).mean() < 1.5, name

    from bear_classifier import Client
    from bear_classifier.api.client import ApiError

    answer = Client(url).classify(ROOT / "examples" / "teddy-bear.jpg", heatmap=True)
    assert (answer.label, answer.words, answer.none_of_these) == ("teddy", "Teddy bear", False)
    assert answer.heatmap_png.startswith(b"\x89PNG")
    with pytest.raises(ApiError) as refused:
        Client(url).classify(PDF)
    assert refused.value.status == 422 and str(refused.value) == sentence(PDF)
    many = Client(url).classify_many([EXAMPLES[3], b"notes"])
    assert many[0].label == "grizzly" and isinstance(many[1], ApiError) and "text file" in str(many[1])
    with pytest.raises(ApiError, match=r"^The server closed the connection while the request \(40\.0 MB\) was on "
                                       r"its way: it takes 20 MB at most\.") as refused:  # refused at once, not read
        Client(url).classify(b"\xff" * 40 * 2**20)
    assert refused.value.status == 413
    with pytest.raises(ApiError, match=r"^Could not reach http://127\.0\.0\.1:1/ .*Is the server running"):
        Client("http://127.0.0.1:1").classify(EXAMPLES[0])
    with socket.socket() as silent:  # takes the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(ApiError, match=r"did not answer within 1 s"):
            Client(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=1).classify(EXAMPLES[0])
    lesson = subprocess.run([*cli, "--model", ROOT / "export.pkl", *photos], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)  # the lesson's file names its ONNX twin: the same lines, no torch needed
    assert (lesson.returncode, lesson.stdout, lesson.stderr) == (1, local.stdout, local.stderr)
    down = subprocess.run([*cli, "--url", "http://127.0.0.1:1", photos[0]], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert down.returncode == 2 and down.stderr.startswith("error: Could not reach http://127.0.0.1:1/")


def test_the_api_answers_with_the_token_the_deployer_set_only(tmp_path):
    """BEAR_API_TOKEN and BEAR_API_CORS, on a Jupyter server as Binder runs it (binder/postBuild's extension)."""
    from test_first_minute import binder_server

    from bear_classifier import Client
    from bear_classifier.api.client import ApiError

    env = {"BEAR_API_TOKEN": "s3cret-token", "BEAR_API_CORS": "https://bears.example.org",
           "BEAR_FEEDBACK_DB": str(tmp_path / "f.db")}
    with binder_server(tmp_path / "server.log", **env) as (url, log, _):
        assert wait_until_ready(url)
        photo_bytes = (ROOT / "examples" / "grizzly.jpg").read_bytes()
        for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            status, head, answer = call(url, "POST", "/api/classify", photo_bytes, {"Content-Type": "image/jpeg", **auth})
            assert status == 401 and "Authorization: Bearer" in answer["error"] and "WWW-Authenticate" in head
        assert Client(url, token="s3cret-token").classify(photo_bytes).label == "grizzly"
        with pytest.raises(ApiError, match="needs its token"):
            Client(url, token="").model()
        status, head, _ = call(url, "OPTIONS", "/api/classify", headers={"Origin": "https://bears.example.org"})
        assert status == 204 and head["Access-Control-Allow-Origin"] == "https://bears.example.org"
        assert "Authorization" in head["Access-Control-Allow-Headers"]
        assert call(url, "OPTIONS", "/api/classify", headers={"Origin": "https://other.example"})[0] == 403
        assert call(url, "GET", "/api/health")[0] == 200  # probes need no token
        page = call(url, "GET", "/api/docs")[2]
        assert "s3cret" not in page and "Authorization: Bearer $BEAR_API_TOKEN" in page
        assert "Traceback" not in log.read_text()


def wait_until_ready(url: str, timeout: float = 60) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if call(url, "GET", "/api/ready")[0] == 200:
            return True
        time.sleep(0.2)
    return False


def test_behind_haproxy_as_make_replicas_serves_it(server, tmp_path):
    """deploy/haproxy.cfg in front of the server: the API answers through it, and HAProxy refuses what the API would."""
    from test_deploy import tool

    from browser import free_port, wait_for

    url, _ = server
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text((ROOT / "deploy" / "haproxy.cfg").read_text() + f"    server r1 127.0.0.1:{url.rsplit(':', 1)[1]} cookie r1\n")
    port = free_port()
    proc = subprocess.Popen([tool("haproxy"), "-f", str(cfg), "-db"], env={"BEAR_LB_BIND": f"127.0.0.1:{port}"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    balancer = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: answers(balancer + "/api/health"), 30)
        body, headers = multipart([(p.name, p.read_bytes()) for p in EXAMPLES[3:]])
        status, _, answer = call(balancer, "POST", "/api/classify", body, {**headers, "X-Forwarded-For": "203.0.113.1"})
        assert status == 200 and [r["label"] for r in answer["results"]] == ["grizzly", "not_bear", "teddy"]
        assert call(balancer, "GET", "/api/docs")[2].count(f"{balancer}/api/classify") >= 3  # its own address
        answer, _ = raw(balancer, b"POST /api/classify HTTP/1.1\r\nHost: a\r\nContent-Type: image/jpeg\r\n"
                                  b"Content-Length: %d\r\n\r\n" % (21 * 2**20), [b"\xff" * 2**20] * 21)
        assert answer.startswith(b"HTTP/1.1 413")  # HAProxy's own refusal, before the body reaches the server
    finally:
        proc.terminate()
        proc.wait(10)


def answers(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=5).status == 200
    except OSError:
        return False


def test_a_made_up_host_header_stays_out_of_the_examples(server):
    url, _ = server
    answer, _ = raw(url, b'GET /api/docs HTTP/1.1\r\nHost: evil.example"><script>alert(1)</script>\r\n'
                         b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") or answer.startswith(b"HTTP/1.1 400"), answer[:100]
    assert b"<script" not in answer and b"evil.example" not in answer


def test_bear_api_off_serves_the_page_alone(monkeypatch):
    from voila.app import Voila

    from bear_classifier.api.routes import ApiVisitors

    server = Voila(server_url="/bears/")  # the application whose identity provider it is: its prefix
    monkeypatch.setenv("BEAR_API", "off")
    assert not [route for route, *_ in ApiVisitors(parent=server).get_handlers() if "/api/" in route]
    monkeypatch.setenv("BEAR_API", "on")
    routes = [route for route, *_ in ApiVisitors(parent=server).get_handlers()]
    assert "/bears/api/classify" in routes and "/bears/api/docs" in routes


def test_the_page_and_the_api_give_one_answer_for_one_photo(server):
    """One code path from bytes to answer: the page's card and the API say the same, to the fourth decimal."""
    from browser import chromium, open_app, require_browser, upload_file, wait_card

    require_browser()
    url, _ = server
    data = (ROOT / "examples" / "black-bear.jpg").read_bytes()
    api = call(url, "POST", "/api/classify", data, {"Content-Type": "image/jpeg"})[2]["results"][0]
    with chromium() as browser:
        page = open_app(browser, url)
        upload_file(page, "black-bear.jpg", data, "image/jpeg")
        text = wait_card(page, "black-bear.jpg", timeout_ms=60_000)
    assert f"Prediction: {api['label']}; Probability: {api['probability']:.4f}" in text, text



def test_a_model_that_cannot_load_leaves_the_server_live_but_not_ready(tmp_path):
    """A changed export.onnx (its sha256 no longer the card's) is never loaded: the API's routes on a tornado server
    of their own say so in a sentence, the liveness probe still answers, the readiness probe doesn't."""
    import asyncio

    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets
    from tornado.web import Application

    from bear_classifier.api.routes import handlers
    from bear_classifier.api.service import BROKEN, Model, Service

    changed = bytearray((ROOT / "export.onnx").read_bytes())
    changed[-100] ^= 0xFF
    (tmp_path / "export.onnx").write_bytes(bytes(changed))
    shutil.copy(ROOT / "export.json", tmp_path / "export.json")
    model = Model(tmp_path / "export.onnx")
    model.loaded.exception(timeout=60)  # loading has ended (in failure)
    service = Service(model=model)
    loop, started = asyncio.new_event_loop(), threading.Event()

    def serve(port: list) -> None:
        asyncio.set_event_loop(loop)
        sockets = bind_sockets(0, "127.0.0.1")
        HTTPServer(Application(handlers("/", service))).add_sockets(sockets)
        port.append(sockets[0].getsockname()[1])
        started.set()
        loop.run_forever()

    port: list = []
    threading.Thread(target=serve, args=(port,), daemon=True).start()
    assert started.wait(10)
    url = f"http://127.0.0.1:{port[0]}"
    try:
        assert call(url, "GET", "/api/health")[0] == 200
        status, head, answer = call(url, "GET", "/api/ready")
        assert (status, answer) == (503, {"error": BROKEN}) and "Retry-After" not in head
        status, _, answer = call(url, "POST", "/api/classify", EXAMPLES[0].read_bytes(), {"Content-Type": "image/jpeg"})
        assert (status, answer) == (503, {"error": BROKEN})
        status, _, page = call(url, "GET", "/api/docs")
        assert status == 200 and "The labels:" not in page
        from bear_classifier import Client

        assert Client(url).ready() is False
    finally:
        loop.call_soon_threadsafe(loop.stop)


def test_where_the_page_serves_the_lessons_pkl_the_api_serves_its_onnx_twin(monkeypatch):
    from bear_classifier.api.service import Model

    monkeypatch.setenv("BEAR_MODEL", str(ROOT / "export.pkl"))  # load_learner on the page, which the API can't (torch)
    model = Model()
    model.loaded.result(timeout=60)
    assert model.classifier().sha256 == json.loads((ROOT / "export.json").read_text())["serving"]["sha256"]
    assert model.classifier().classes.labels == ["black", "grizzly", "teddy"]


def test_photos_answered_at_once_on_the_pools_threads_get_the_same_answers():
    """The API answers on one thread per core with one model (and one face detector): photos of a person at once,
    beside bears, each get their own answer, as one at a time would, and are all counted."""
    from concurrent.futures import ThreadPoolExecutor

    from bear_classifier.api.service import Model, Service

    service = Service(model=Model(ROOT / "export.onnx"))
    service.model.loaded.result(timeout=60)
    photos = [("person.jpg", (ROOT / "tests" / "photos" / "person.jpg").read_bytes()),
              ("grizzly.jpg", (ROOT / "examples" / "grizzly.jpg").read_bytes())] * 24
    alone = {name: service.classify_one(name, data) for name, data in photos[:2]}
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda p: service.classify_one(*p), photos))
    assert alone["person.jpg"]["label"] == "not_bear" and alone["person.jpg"]["person"]
    for answer in together:
        assert "error" not in answer, answer
        assert (answer["label"], answer.get("person")) == (alone[answer["name"]]["label"], alone[answer["name"]].get("person"))


def test_api_answers_join_the_answers_log_the_monitor_reads(tmp_path, monkeypatch):
    """An API answer is a row of the page's answers log (label, probability, version, "api"; never the photo), so the
    monitor counts programs' answers too; a file that is no photo is not an answer; BEAR_FEEDBACK=off logs nothing."""
    import sqlalchemy as sa

    from bear_classifier.api.service import Model, Service
    from bear_classifier.page.tables import answers

    monkeypatch.setenv("BEAR_FEEDBACK_DB", str(tmp_path / "f.db"))
    service = Service(model=Model(ROOT / "export.onnx"))
    service.model.loaded.result(timeout=60)
    assert service.log_opened.wait(60)
    grizzly = service.classify_one("grizzly.jpg", (ROOT / "examples" / "grizzly.jpg").read_bytes())
    assert "error" in service.classify_one("notes.txt", b"not a photo at all")
    service.answers_log.flush()
    with service.answers_log.engine.connect() as db:
        rows = db.execute(sa.select(answers.c.predicted, answers.c.probability, answers.c.model_version,
                                    answers.c.source)).all()
    assert [(r.predicted, r.model_version, r.source) for r in rows] == [("grizzly", grizzly["model"]["name"], "api")]
    assert rows[0].probability == pytest.approx(grizzly["probability"], abs=1e-6)

    monkeypatch.setenv("BEAR_FEEDBACK", "off")
    quiet = Service(model=Model(ROOT / "export.onnx"))
    quiet.model.loaded.result(timeout=60)
    assert quiet.log_opened.wait(60) and quiet.answers_log is None
    assert "error" not in quiet.classify_one("grizzly.jpg", (ROOT / "examples" / "grizzly.jpg").read_bytes())


def test_a_database_that_never_answers_costs_api_answers_their_row_not_their_time(monkeypatch):
    """The answers log's database accepts connections and says nothing (a PostgreSQL server hung, a firewall): the
    API answers at once all the same, while the log is still being opened on a thread of its own."""
    import socket

    from bear_classifier.api.service import Model, Service

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts (the kernel does), never replies
    try:
        monkeypatch.setenv("BEAR_FEEDBACK_URL", f"postgresql+psycopg://bear@127.0.0.1:{silent.getsockname()[1]}/bear")
        service = Service(model=Model(ROOT / "export.onnx"))
        service.model.loaded.result(timeout=60)
        answers = [service.classify_one("grizzly.jpg", (ROOT / "examples" / "grizzly.jpg").read_bytes())
                   for _ in range(3)]
        assert [a["label"] for a in answers] == ["grizzly"] * 3
        assert not service.log_opened.is_set() and service.answers_log is None  # still connecting, 5 s at least
    finally:
        silent.close()
