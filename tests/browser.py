"""Helpers for the real-browser tests: a Voila server on a free loopback port, and headless Chromium."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path


from conftest import missing

ROOT = Path(__file__).resolve().parent.parent
SHARE = ROOT / "share" / "jupyter"  # the app's Voila template, as `make app` finds it
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def require_browser() -> None:
    """Skip where Chromium or Playwright is missing, except in CI, where that is a failure."""
    absent = [what for what, ok in [("chromium", Path(CHROMIUM).exists() or shutil.which("chromium")),
                                      ("playwright", _has_playwright())] if not ok]
    if absent:
        missing(" and ".join(absent), "see README: Run it")


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
        return True
    except ImportError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def voila(*extra: str, notebook: str = "app.ipynb", cwd: Path = ROOT, log: Path | None = None, env: dict | None = None,
          port: int | None = None):
    """Run `voila notebook` on 127.0.0.1:<port, or a free one> as `make app` does; yields (base_url, log_path, process).

    Its settings are the notebook folder's voila.json (the app's: its template, guard and visitor checks); the
    template and page hook are this checkout's share/jupyter, as edited, ahead of any installed copy.
    """
    env = {**os.environ, **(env or {})}
    port = port or free_port()
    cmd = [sys.executable, "-m", "voila", notebook, f"--port={port}", "--no-browser", "--Voila.ip=127.0.0.1", *extra]
    env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(SHARE), env.get("JUPYTER_PATH")]))
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(filter(None, [str(SHARE / "config"), env.get("JUPYTER_CONFIG_PATH")]))
    with serve(cmd, port, "/voila/static/", cwd, log, env) as started:
        yield started


@contextmanager
def serve(cmd: list[str], port: int, probe: str, cwd: Path, log: Path | None, env: dict):
    """Start a server process and wait until http://127.0.0.1:port<probe> answers; yields (base_url, log_path, process)."""
    log = log or Path(os.environ.get("TMPDIR", "/tmp")) / f"server-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(url + probe, timeout=2)
            except urllib.error.HTTPError:
                break  # the server answers
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"{' '.join(cmd[:4])} did not start:\n{log.read_text()}")
                time.sleep(0.3)
            else:
                break
        yield url, log, proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for(condition, timeout: float, step: float = 0.5) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; its last value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def kernels(proc) -> list:
    """The kernel processes a Voila server has started (psutil.Process objects)."""
    import psutil

    found = []
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and any("ipykernel" in part for part in child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:  # ended while we looked
            pass
    return found


@contextmanager
def chromium(*extra_args: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + list(extra_args), headless=True)
        try:
            yield browser
        finally:
            browser.close()


def open_app(browser, url: str, timeout_ms: int = 120_000, init_script: str | None = None, ready: str | None = None,
             **context):
    """Open the app page and wait until the photo input widget is live (not just the early button); returns the page.

    Each call is a fresh browser context: a separate visitor. `ready` is what to wait for instead of the
    photo input; `context` goes to new_context (viewport, permissions...).
    """
    page = browser.new_context(**{"viewport": {"width": 900, "height": 900}, **context}).new_page()
    if init_script:
        page.add_init_script(init_script)
    page.goto(url, timeout=timeout_ms)
    page.locator(ready or WIDGET_BUTTON).first.wait_for(state="visible", timeout=timeout_ms)
    return page


WIDGET_BUTTON = "#rendered_cells .bear-input button.bear-upload"  # the widget's "Upload photos"


def as_payload(name: str, data: bytes | Path, mime: str = "application/octet-stream"):
    return data if isinstance(data, Path) else {"name": name, "mimeType": mime, "buffer": data}


def upload_files(page, *files, button: str = WIDGET_BUTTON) -> None:
    """Choose files through an "Upload photos" button's file dialog: each (name, data[, mime]); data may be a Path
    for files over Playwright's 50 MB in-memory limit."""
    with page.expect_file_chooser() as chooser:
        page.locator(button).click()
    chooser.value.set_files([as_payload(*f) for f in files])


def upload_file(page, name: str, data: bytes | Path, mime: str = "application/octet-stream", **kw) -> None:
    upload_files(page, (name, data, mime), **kw)


_MAKE_FILES = """files => { const dt = new DataTransfer();
    for (const [name, type, b64] of files) {
      const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
      dt.items.add(new File([bytes], name, { type }));
    }
    return dt; }"""


def _encoded(files) -> list:
    import base64

    return [[name, mime, base64.b64encode(data).decode()] for name, data, mime in files]


def drop_files(page, *files, check_highlight: bool = True) -> None:
    """Drag (name, data, mime) files over the page and drop them in the middle, as a person drags from their desktop."""
    dt = page.evaluate_handle(_MAKE_FILES, _encoded(files))
    page.dispatch_event("body", "dragenter", {"dataTransfer": dt})
    page.dispatch_event("body", "dragover", {"dataTransfer": dt})
    if check_highlight:
        assert page.evaluate("document.body.classList.contains('bear-dropping')"), "no drop highlight"
    page.dispatch_event("body", "drop", {"dataTransfer": dt})


def paste_file(page, name: str, data: bytes, mime: str) -> None:
    """Paste an image file anywhere on the page (Ctrl/Cmd+V with a copied image file)."""
    page.evaluate(f"""files => {{ const dt = ({_MAKE_FILES})(files);
        document.body.dispatchEvent(new ClipboardEvent('paste', {{ clipboardData: dt, bubbles: true }})); }}""",
                  _encoded([(name, data, mime)]))


def card(page, name: str):
    """The answer card of the photo called `name`."""
    return page.locator(".bear-card", has=page.locator(".bear-card-name", has_text=name)).first


def wait_card(page, name: str, timeout_ms: int = 120_000) -> str:
    """Wait for the card of `name`; its text."""
    c = card(page, name)
    c.wait_for(timeout=timeout_ms)
    return c.inner_text()
