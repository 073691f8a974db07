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

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARE = ROOT / "share" / "jupyter"  # the app's Voila template, as `make app` finds it
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def require_browser() -> None:
    """Skip where Chromium or Playwright is missing, except in CI, where that is a failure."""
    missing = [what for what, ok in [("chromium", Path(CHROMIUM).exists() or shutil.which("chromium")),
                                      ("playwright", _has_playwright())] if not ok]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests, but {', '.join(missing)} is missing")
        pytest.skip(f"needs {', '.join(missing)} (see README: Running the tests)")


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
          template: str | None = "bear"):
    """Run `voila notebook` on 127.0.0.1:<free port> as `make app` does; yields (base_url, log_path, process).

    `template` is the Voila template, found in this repository's share/jupyter; None for Voila's default.
    """
    env = {**os.environ, **(env or {})}
    port = free_port()
    cmd = [sys.executable, "-m", "voila", notebook, f"--port={port}", "--no-browser", "--Voila.ip=127.0.0.1", *extra]
    if template:
        cmd.append(f"--template={template}")
        env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(SHARE), env.get("JUPYTER_PATH")]))
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
                    raise RuntimeError(f"{cmd[2]} did not start:\n{log.read_text()}")
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
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def open_app(browser, url: str, timeout_ms: int = 120_000, init_script: str | None = None):
    """Open the app page and wait until the FileUpload widget is live (not just the early button); returns the page."""
    page = browser.new_page(viewport={"width": 900, "height": 900})  # a fresh context: a separate visitor
    if init_script:
        page.add_init_script(init_script)
    page.goto(url, timeout=timeout_ms)
    page.locator("#rendered_cells .widget-upload").wait_for(state="visible", timeout=timeout_ms)
    return page


def upload_file(page, name: str, data: bytes | Path, mime: str = "application/octet-stream") -> None:
    """Upload through the FileUpload button's file chooser (ipywidgets 8 has no <input> in the DOM).

    `data` is the file's bytes, or a Path for files over Playwright's 50 MB in-memory limit.
    """
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Upload photo").click()
    chooser.value.set_files(data if isinstance(data, Path) else [{"name": name, "mimeType": mime, "buffer": data}])
