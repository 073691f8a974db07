"""The first minute, as a newcomer has it: a fresh environment, plain `voila app.ipynb`, and a photo chosen the
instant the upload button shows. Nothing here sets PYTHONPATH or waits for the page to settle."""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import websocket

from browser import (ROOT, WIDGET_BUTTON, chromium, free_port, require_browser, serve, voila)
from test_browser import expect, real_photo
from wire import channels, get, is_closed, kernel_id

# Either upload button, whichever shows: the template's early one, or the photo input's once it is up.
ANY_BUTTON = f"#bear-early button:visible, {WIDGET_BUTTON}:visible"
# How long the file dialog stays open after the click: over these, the photo input takes over from the early
# button while the dialog is open (a photo lost there, before, came to nothing).
DIALOG_SECONDS = [0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.1, 1.4, 1.8]
QUIET = ["is not trusted", "without encryption", "Traceback", "CRITICAL", "No such comm"]


def fresh_checkout(tmp_path: Path) -> Path:
    """The files `git clone` gives: the tracked files of this working tree, nothing built or ignored."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True).stdout.split("\0")
    if not any(files):
        pytest.skip("not a git checkout")
    dst = tmp_path / "bear_classifier"
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    return dst


def newcomer_env(home: Path) -> dict:
    """The environment of someone who has just made a venv: no PYTHONPATH, no JUPYTER_* paths, a home of their own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PYTHONPATH", "BEAR_", "VIRTUAL_ENV"))}
    home.mkdir(parents=True, exist_ok=True)
    return env | {"HOME": str(home), "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache/pip"))}


def serving_venv(tmp_path: Path, checkout: Path, env: dict) -> Path:
    """A venv made exactly as README says for serving: `pip install -r requirements-serve.txt`, in the checkout."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "-r",
                        "requirements-serve.txt"], cwd=checkout, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        pytest.fail(f"pip install -r requirements-serve.txt failed:\n{r.stderr[-3000:]}")
    return venv


def choose_at_once(page, data: bytes, dialog_seconds: float = 0.0) -> float:
    """Choose one photo with whichever upload button shows first, the moment it shows; the seconds from then to
    its answer card."""
    button = page.locator(ANY_BUTTON).first
    button.wait_for(state="visible", timeout=60_000)
    shown = time.time()
    with page.expect_file_chooser(timeout=10_000) as chooser:
        button.click(timeout=10_000)
    time.sleep(dialog_seconds)
    chooser.value.set_files([{"name": "first.jpg", "mimeType": "image/jpeg", "buffer": data}])
    page.locator(".bear-card").first.wait_for(timeout=60_000)
    return time.time() - shown


def early_visitors(browser, url: str, count: int, keep_open: int = 6) -> list[float]:
    """`count` fresh visitors, one after another, each choosing a photo at once; their seconds to an answer.
    The latest `keep_open` stay on their pages, holding their kernels: later ones come after the preheated pool
    (4) is used up, yet fewer than the 8 kernels one address may hold."""
    data, label = real_photo("grizzly", 2)
    times, pages = [], []
    for i in range(count):
        page = browser.new_context(viewport={"width": 900, "height": 900}).new_page()
        page.goto(url, wait_until="commit")
        try:
            times.append(choose_at_once(page, data, DIALOG_SECONDS[i % len(DIALOG_SECONDS)]))
        except Exception as e:
            raise AssertionError(f"visitor {i + 1} of {count} got no answer: {page.inner_text('body')[:400]!r}") from e
        assert expect(label) in page.locator(".bear-card").first.inner_text()
        pages.append(page)
        if len(pages) > keep_open:
            pages.pop(0).context.close()
    print(f"\n{count} early visitors: median {statistics.median(times):.2f} s, worst {max(times):.2f} s to the answer")
    return times


def assert_guarded(url: str, page: str = "/") -> None:
    """The websocket guard is on: an 8-byte frame (a part count with nothing after it) closes its socket, and the
    server goes on answering."""
    _, html = get(url + page)
    ws = channels(url, kernel_id(html))
    ws.send(b"\0" * 8, opcode=websocket.ABNF.OPCODE_BINARY)
    assert is_closed(ws), "the guard is off: an 8-byte frame left its socket open"
    assert get(url + page)[0] == 200


def assert_quiet(log: str) -> None:
    noise = [line for line in log.splitlines() if any(word in line for word in QUIET)]
    assert not noise, "\n".join(noise[:10])


def test_a_newcomers_venv_and_plain_voila_serve_the_page_with_its_guard(tmp_path):
    """`pip install -r requirements-serve.txt` in a fresh clone, then `voila app.ipynb`: the page, an answer for a
    photo chosen at once, the websocket guard on (an 8-byte frame closes its socket), a quiet console."""
    require_browser()
    checkout = fresh_checkout(tmp_path)
    env = newcomer_env(tmp_path / "home")
    started = time.time()
    venv = serving_venv(tmp_path, checkout, env)
    port = free_port()
    cmd = [str(venv / "bin" / "voila"), "app.ipynb", f"--port={port}", "--no-browser"]
    with serve(cmd, port, "/voila/static/health.txt", checkout, tmp_path / "voila.log", env) as (url, log, _):
        with chromium() as browser:
            early_visitors(browser, url, 2)
            page = browser.new_context().new_page()
            page.goto(url)
            assert page.title() == "Is it a bear?"  # the model card's title, through the installed page hook
        assert_guarded(url)
        assert "Closing the websocket of kernel" in log.read_text()
        time.sleep(1)
        assert_quiet(log.read_text())
    print(f"\nnewcomer: fresh venv to answered photo in {time.time() - started:.0f} s")


@pytest.fixture(scope="module")
def full_set(tmp_path_factory) -> Path:
    """A fresh clone whose `pip install -r requirements.txt` went into this suite's own environment, which already
    holds every pin (requirements-dev.txt includes them): pip installs this checkout's package again, as it is now,
    with its template and page hook. Yields the clone."""
    checkout = fresh_checkout(tmp_path_factory.mktemp("full"))
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
                        "requirements.txt"], cwd=checkout, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return checkout


def test_the_full_set_serves_plain_voila_without_pythonpath(full_set, tmp_path):
    """`pip install -r requirements.txt`, then plain `voila app.ipynb` from the clone with no PYTHONPATH or JUPYTER_*
    set: the page, with its guard."""
    require_browser()
    checkout = full_set
    voila_script = Path(sys.executable).parent / "voila"
    env = newcomer_env(tmp_path / "home")
    port = free_port()
    with serve([str(voila_script), "app.ipynb", f"--port={port}", "--no-browser"], port, "/voila/static/health.txt",
               checkout, tmp_path / "voila.log", env) as (url, log, _), chromium() as browser:
        early_visitors(browser, url, 1)
        assert_guarded(url)
        assert_quiet(log.read_text())


def test_plain_voila_started_from_the_folder_above_serves_the_app_too(full_set, tmp_path):
    """`voila bear_classifier/app.ipynb` from the folder above: Voila reads voila.json from the working directory only,
    so this was its plain page, without the template, the API or the guard, and nothing said why."""
    require_browser()
    checkout = full_set
    env = newcomer_env(tmp_path / "home")
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "voila"), f"{checkout.name}/app.ipynb", f"--port={port}", "--no-browser"]
    with serve(cmd, port, "/voila/static/health.txt", checkout.parent, tmp_path / "voila.log", env) as (url, log, _):
        assert get(url + "/api/health")[0] == 200 and get(url + "/api/ready")[0] == 200  # the API's model loaded
        with chromium() as browser:
            early_visitors(browser, url, 1)
            page = browser.new_context().new_page()
            page.goto(url)
            assert page.title() == "Is it a bear?"
        assert_guarded(url)
        assert_quiet(log.read_text())
        assert "ERROR" not in log.read_text()  # the model card's title read for the page's header
        assert f"Using this app's settings, {checkout / 'voila.json'}" in log.read_text()


def test_twenty_visitors_who_choose_a_photo_at_once_all_get_an_answer():
    """Served as `make app` serves it: 20 fresh visitors, more than the preheated kernels, each choosing a photo
    within 100 ms of the button showing, with the file dialog open for 0 to 1.8 s (the photo input takes over
    from the early button meanwhile): 20 answers."""
    require_browser()
    with voila() as (url, log, _), chromium() as browser:
        time.sleep(8)  # the pool preheated, as a server that has just started
        assert len(early_visitors(browser, url, 20)) == 20
        assert_quiet(log.read_text())


@contextmanager
def binder_server(log: Path, **env_extra: str):
    """A Jupyter server as Binder runs it: binder/postBuild's configuration, Voila inside it; yields (url, log, proc).
    The package, template and page hook are this checkout's, where binder/requirements.txt installs them on Binder."""
    # A home as short as Binder's (/home/jovyan): the kernels' IPC sockets live under it, and a socket's path has
    # room for about 107 characters.
    home = tempfile.mkdtemp(prefix="home-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")} | {"HOME": home}
    subprocess.run(["bash", "binder/postBuild"], cwd=ROOT, env=env, check=True)
    env |= {"PYTHONPATH": str(ROOT), "JUPYTER_PATH": str(ROOT / "share" / "jupyter"),
            "JUPYTER_CONFIG_PATH": str(ROOT / "share" / "jupyter" / "config"), **env_extra}
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "jupyter-server"), f"--port={port}", "--no-browser",
           "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--allow-root"]
    try:
        with serve(cmd, port, "/api", ROOT, log, env) as started:
            yield started
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_visitors_who_choose_at_once_on_binder_get_an_answer(tmp_path):
    """Binder: binder/postBuild's configuration, a Jupyter server, Voila at /voila/render/app.ipynb."""
    require_browser()
    with binder_server(tmp_path / "server.log") as (url, _, _), chromium() as browser:
        assert len(early_visitors(browser, url + "/voila/render/app.ipynb", 8)) == 8
        assert_guarded(url, "/voila/render/app.ipynb")


def test_on_binder_a_forks_page_speaks_of_its_own_classes(full_set, tmp_path):
    """The title and question come from the served model's card on Binder too (the installed page hook), not from
    app.ipynb's "# Is it a bear?": a fork edits classes.toml only."""
    card = json.loads((ROOT / "export.json").read_text())
    card["classes"] = {"title": "Cat or dog?", "question": "Give me photos of pets.", "none_label": "other",
                       "kinds": [{"label": "cat"}, {"label": "dog"}]}
    (tmp_path / "pets.json").write_text(json.dumps(card))
    (tmp_path / "pets.onnx").write_bytes(b"")  # the card alone says what the page tells apart
    with binder_server(tmp_path / "server.log", BEAR_MODEL=str(tmp_path / "pets.onnx"), BEAR_FEEDBACK="off") as (url, _, _):
        _, html = get(url + "/voila/render/app.ipynb")
    header = html.decode().split('<header id="bear-header"', 1)[1].split("</header>", 1)[0]
    assert "<h1>Cat or dog?</h1>" in header and "Give me photos of pets." in header and "bear" not in header.lower()
    assert "<title>Cat or dog?</title>" in html.decode()


def test_a_batch_lost_on_the_way_is_said_so_and_sent_again_with_one_click():
    """The socket loses the first batch's messages (Playwright drops them between page and server): after a few
    seconds without the kernel's receipt the page says so and offers "Send again", which brings one answer."""
    require_browser()
    import re

    data, label = real_photo("teddy", 1)
    dropped = []

    def lose_the_first_batch(ws) -> None:
        server = ws.connect_to_server()

        def to_server(message) -> None:
            raw = message if isinstance(message, bytes) else message.encode()
            if len(dropped) < 2 and (b'"kind":"batch"' in raw or b'"kind":"photo"' in raw):
                dropped.append(raw[:0])  # the batch message, then its photo
                return
            server.send(message)

        ws.on_message(to_server)
        server.on_message(lambda message: ws.send(message))

    with voila() as (url, log, _), chromium() as browser:
        page = browser.new_context(viewport={"width": 900, "height": 900}).new_page()
        page.route_web_socket(re.compile(r".*/channels.*"), lose_the_first_batch)
        page.goto(url)
        page.locator(WIDGET_BUTTON).wait_for(timeout=60_000)
        with page.expect_file_chooser() as chooser:
            page.locator(WIDGET_BUTTON).click()
        chooser.value.set_files([{"name": "lost.jpg", "mimeType": "image/jpeg", "buffer": data}])
        page.get_by_text("The server has not received your photos yet.").wait_for(timeout=20_000)
        assert len(dropped) == 2 and page.locator(".bear-card").count() == 0
        page.get_by_role("button", name="Send again").click()
        card = page.locator(".bear-card").first
        card.wait_for(timeout=30_000)
        assert expect(label) in card.inner_text()
        page.wait_for_timeout(1000)
        assert page.locator(".bear-card").count() == 1
        assert not page.get_by_role("button", name="Send again").is_visible()
