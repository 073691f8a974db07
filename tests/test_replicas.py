"""Several Voila replicas behind HAProxy (`make replicas`), for real: visitors spread, stay on their kernel,
and a replica that stops takes only its own visitors with it, who recover by reloading."""
import csv
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import psutil

from browser import ROOT, card, chromium, kernels, open_app, require_browser, upload_file, wait_card, wait_for
from conftest import BEARS, missing
from corpus import encode, photo

VISITORS, REPLICAS = 12, 3
LOST = "The connection to the server was lost. Please reload the page to keep going."


def free_ports(n: int) -> int:
    """The first of n consecutive free loopback ports."""
    for first in range(21000, 40000, 97):
        try:
            for p in range(first, first + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return first
        except OSError:
            continue
    raise RuntimeError("no free ports")


def up(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


def photos(classifier) -> list[tuple[str, bytes, str]]:
    """One photo per visitor, each with the answer the model gives it in-process (what the page must show)."""
    from bear_classifier.inference.images import open_image

    if BEARS.is_dir():
        rows = list(csv.DictReader(open(ROOT / "data" / "valid.csv")))
        files = [(BEARS / r["file"]).read_bytes() for r in rows[::len(rows) // VISITORS]][:VISITORS]
    else:
        files = [encode(photo(seed=i), "JPEG") for i in range(VISITORS)]
    return [(f"visitor{i}.jpg", data, classifier.predict(open_image(data)).label) for i, data in enumerate(files)]


@contextmanager
def replica_set(tmp_path, replicas: int):
    """`make replicas` for real: yields (balancer url, {"r1": Voila process, ...}, health url of each replica)."""
    require_browser()
    if not any(os.access(os.path.join(d, "haproxy"), os.X_OK) for d in ["/usr/sbin", "/usr/bin"]):
        missing("haproxy", "sudo apt-get install haproxy")
    lb_port, first = free_ports(1), free_ports(replicas + 1) + 1
    env = {**os.environ, "REPLICAS": str(replicas), "PORT": str(lb_port), "FIRST_REPLICA_PORT": str(first),
           "LOGS": str(tmp_path), "BEAR_FEEDBACK_DB": str(tmp_path / "feedback.db")}
    # What `make replicas` runs, with this environment's Voila.
    env["VOILA"] = str(Path(sys.executable).parent / "voila")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))  # this checkout's package
    make = subprocess.Popen(["deploy/replicas.sh"], cwd=ROOT, env=env, stdout=open(tmp_path / "make.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{lb_port}"
    try:
        health = [f"http://127.0.0.1:{first + i}/voila/static/health.txt" for i in range(replicas)]
        assert wait_for(lambda: make.poll() is None and all(up(u) for u in health) and up(url + "/voila/static/health.txt"), 180), \
            (tmp_path / "make.log").read_text()
        yield url, {f"r{i + 1}": replica_process(first + i) for i in range(replicas)}, health
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(30)
        # Nothing of the set outlives it: a replica started again as the set was stopping would be an orphan.
        left = [p for p in (replica_process(first + i) for i in range(replicas)) if p is not None]
        for p in left:
            p.kill()
        assert not left, f"replicas still running after the set stopped: {[p.pid for p in left]}"


def replica_process(port: int) -> psutil.Process | None:
    """The Voila replica serving `port` (None while it is being started again)."""
    return next((p for p in psutil.process_iter(["cmdline"]) if f"--port={port}" in " ".join(p.info["cmdline"] or [])
                 and p.status() != psutil.STATUS_ZOMBIE), None)


def replica_of(page) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == "BEAR_REPLICA")


def test_twelve_visitors_over_three_replicas_then_one_replica_stops_and_comes_back(classifier, tmp_path):
    with replica_set(tmp_path, REPLICAS) as (url, servers, replica_urls), chromium() as browser:
        uploads = photos(classifier)
        pages = [open_app(browser, url, timeout_ms=240_000) for _ in range(VISITORS)]
        for page, (name, data, _) in zip(pages, uploads):
            upload_file(page, name, data, "image/jpeg")
        for page, (name, _, label) in zip(pages, uploads):
            assert f"Prediction: {label}; Probability: 0." in wait_card(page, name, timeout_ms=240_000)
        where = [replica_of(page) for page in pages]
        assert set(where) == set(servers), where  # every replica serves some of the visitors
        for name, proc in servers.items():  # each visitor's kernel lives on the replica their cookie names
            assert len(kernels(proc)) >= where.count(name), (name, where)

        # One replica stops. Its visitors are told, the others notice nothing.
        stopped = where[0]
        servers[stopped].send_signal(signal.SIGTERM)
        servers[stopped].wait(30)
        on_it = [p for p, r in zip(pages, where) if r == stopped]
        others = [(p, u) for p, u, r in zip(pages, uploads, where) if r != stopped]
        for page in on_it:
            page.get_by_text(LOST).wait_for(timeout=60_000)
        for page, (name, data, label) in others[:3]:
            upload_file(page, "again-" + name, data, "image/jpeg")
            assert f"Prediction: {label}; " in wait_card(page, "again-" + name, timeout_ms=120_000)
            assert page.get_by_text(LOST).count() == 0

        page = on_it[0]  # a reload brings a working page
        page.reload()
        page.locator("#rendered_cells .bear-input button.bear-upload").wait_for(timeout=240_000)
        name, data, label = uploads[0]
        upload_file(page, "after-reload.jpg", data, "image/jpeg")
        assert f"Prediction: {label}; " in wait_card(page, "after-reload.jpg", timeout_ms=120_000)
        assert card(page, name).count() == 0

        # replicas.sh starts it again, and it takes visitors again (HAProxy sees it healthy within seconds).
        assert wait_for(lambda: up(replica_urls[int(stopped[1:]) - 1]), 120)
        back = []

        def lands_on_the_restarted_replica() -> bool:
            back.append(replica_of(open_app(browser, url, timeout_ms=240_000)))
            return back[-1] == stopped

        assert wait_for(lands_on_the_restarted_replica, 90, step=1), back


def test_a_killed_replica_and_a_frozen_one_are_started_again_and_serve(tmp_path):
    with replica_set(tmp_path, 2) as (url, servers, health):
        killed, frozen = servers["r1"], servers["r2"]
        killed.send_signal(signal.SIGKILL)
        frozen.send_signal(signal.SIGSTOP)  # alive, its port open, answering nothing
        try:
            for i, old in enumerate([killed, frozen]):
                port = int(health[i].split(":")[2].split("/")[0])
                assert wait_for(lambda: getattr(replica_process(port), "pid", old.pid) != old.pid and up(health[i]), 150), \
                    (tmp_path / "make.log").read_text()
        finally:
            if frozen.is_running():
                frozen.send_signal(signal.SIGCONT)
        assert not frozen.is_running() or frozen.status() == psutil.STATUS_ZOMBIE
        log = (tmp_path / "make.log").read_text()
        assert "replica 1 ended; starting it again" in log
        assert "replica 2 stopped answering its health check" in log
        # Both serve again: HAProxy sends visitors to each (its cookie names the replica).
        seen = set()

        def both_serve() -> bool:
            with urllib.request.urlopen(url + "/", timeout=60) as r:
                r.read()
                seen.add(next(c.split(";")[0].split("=")[1] for c in r.headers.get_all("Set-Cookie")
                              if c.startswith("BEAR_REPLICA=")))
            return seen == {"r1", "r2"}

        assert wait_for(both_serve, 60, step=0.5), seen
