"""What a public `voila app.ipynb` must not expose: files, code execution, tracebacks, a tampered model.

Every check runs against a real Voila server on loopback; protections that come from Voila's
defaults are tested too, since defaults change between releases.
"""
import shutil
import time

import pytest

from browser import ROOT, chromium, open_app, require_browser, upload_file, voila
from corpus import encode, photo
from wire import channels, get, kernel_id, replies, send

SECRETS = {  # file → a snippet that only that file contains
    "export.pkl": (ROOT / "export.pkl").read_bytes()[:40],
    "export.onnx": (ROOT / "export.onnx").read_bytes()[:40],
    "app.ipynb": b"learn = load_model_in_background()",
    "bear_classifier/page/app.py": b"class Gallery(widgets.VBox)",
    "bear_classifier/inference/predict.py": b"def check_sha256",
    "requirements.txt": b"fastai==",
    "export.json": b'"sha256"',
    "voila.json": b"VoilaConfiguration",
    "data/valid.csv": b"file,label",
}
PREFIXES = ["/voila/files/", "/files/", "/api/contents/", "/voila/static/", "/static/", "/notebooks/",
            "/voila/render/", "/edit/", "/voila/files/bear_classifier/../", "/voila/files/%2e%2e/main/"]


@pytest.fixture(scope="module")
def server():
    with voila() as (url, log, _):
        yield url, log


def test_no_project_file_is_downloadable(server):
    url, _ = server
    leaks = []
    for name, snippet in SECRETS.items():
        for prefix in PREFIXES:
            status, body = get(url + prefix + name)
            if status == 200 and snippet in body:
                leaks.append(prefix + name)
    for listing in ["/api/contents", "/api/contents/bear_classifier", "/tree", "/voila/tree", "/api/kernels",
                    "/api/sessions", "/api/kernelspecs"]:
        status, body = get(url + listing)
        if status == 200 and (b"export." in body or b"bear_classifier" in body):
            leaks.append(listing)
    assert leaks == []


def test_page_carries_no_notebook_source(server):
    url, _ = server
    status, body = get(url + "/")
    assert status == 200
    assert b"<html" in body
    assert b"from bear_classifier.page.app import" not in body and b"learn = load_model_in_background()" not in body


def test_execute_request_over_the_kernel_websocket_is_ignored(server, tmp_path):
    url, log = server
    _, page = get(url + "/")
    ws = channels(url, kernel_id(page))
    marker = tmp_path / "pwned"
    try:
        send(ws, "execute_request", {"code": f"open({str(marker)!r}, 'w').write('x')", "silent": False,
                                     "store_history": False, "user_expressions": {}, "allow_stdin": False})
        send(ws, "kernel_info_request")  # positive control: allowed messages do get answers
        seen = replies(ws, until="kernel_info_reply")
    finally:
        ws.close()
    assert "kernel_info_reply" in seen
    assert "execute_reply" not in seen and "execute_input" not in seen
    time.sleep(1)
    assert not marker.exists()
    assert 'Received message of type "execute_request", which is not allowed' in log.read_text()


def project_copy(tmp_path, tamper: bool = False):
    """The files a deployment has, in a fresh folder; optionally with the served model's bytes changed."""
    dst = tmp_path / "deploy"
    shutil.copytree(ROOT / "bear_classifier", dst / "bear_classifier", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ["app.ipynb", "export.json", "voila.json"]:
        shutil.copy2(ROOT / f, dst / f)
    data = bytearray((ROOT / "export.onnx").read_bytes())
    if tamper:
        data[len(data) // 2] ^= 0x01
    (dst / "export.onnx").write_bytes(bytes(data))
    return dst


def test_tracebacks_stay_in_the_server_log(tmp_path):
    import nbformat

    dst = project_copy(tmp_path)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("raise RuntimeError('internal-detail-4242')")]
    nbformat.write(nb, dst / "boom.ipynb")
    with voila(notebook="boom.ipynb", cwd=dst) as (url, log, _):
        status, body = get(url + "/")
        time.sleep(1)
        server_log = log.read_text()
    assert b"internal-detail-4242" not in body and b"Traceback" not in body
    assert "internal-detail-4242" in server_log


def test_tampered_model_is_refused_with_a_message_on_the_page_and_in_the_log(tmp_path):
    require_browser()
    dst = project_copy(tmp_path, tamper=True)
    broken = "This app's model couldn't be loaded; the site's owner has been told."
    with voila(cwd=dst) as (url, log, _), chromium() as browser:
        page = open_app(browser, url)
        page.get_by_text(broken).first.wait_for(timeout=120_000)  # said before any upload
        upload_file(page, "photo.jpg", encode(photo(), "JPEG"), "image/jpeg")
        page.locator(".bear-card", has_text=broken).wait_for(timeout=120_000)
        body = page.inner_text("body")
        time.sleep(0.5)
        server_log = log.read_text()
    assert "Prediction:" not in body and "Traceback" not in body
    assert "sha256" not in body and "does not match" not in body and "git checkout" not in body
    assert "does not match its model card" in server_log


def test_a_deployment_that_cannot_start_says_so_instead_of_leaving_a_dead_button(tmp_path):
    require_browser()
    dst = project_copy(tmp_path)
    (dst / "bear_classifier" / "page" / "app.py").unlink()  # the notebook's import fails: no widget will ever come
    with voila(cwd=dst) as (url, _, _), chromium() as browser:
        page = browser.new_page()
        page.goto(url)
        page.get_by_text("The app could not start. Please reload the page.").wait_for(timeout=90_000)
        assert page.locator("#bear-early button").is_disabled()
        assert "Traceback" not in page.inner_text("body")
        assert page.locator("h1:visible").count() == 1  # the notebook's title, not twice
