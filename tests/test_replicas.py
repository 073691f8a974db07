"""Several Voila replicas behind HAProxy (`make replicas`), for real: visitors spread, stay on their kernel,
and a replica that stops takes only its own visitors with it, who recover by reloading."""
import csv
import os
import signal
import socket
import subprocess
import urllib.request

import psutil
import pytest

from browser import ROOT, card, chromium, kernels, open_app, require_browser, upload_file, wait_card, wait_for
from conftest import BEARS, IN_CI
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
    from bear_classifier.images import open_image

    if BEARS.is_dir():
        rows = list(csv.DictReader(open(ROOT / "data" / "valid.csv")))
        files = [(BEARS / r["file"]).read_bytes() for r in rows[::len(rows) // VISITORS]][:VISITORS]
    else:
        files = [encode(photo(seed=i), "JPEG") for i in range(VISITORS)]
    return [(f"visitor{i}.jpg", data, classifier.predict(open_image(data)).label) for i, data in enumerate(files)]


def replica_of(page) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == "BEAR_REPLICA")


def test_twelve_visitors_over_three_replicas_then_one_replica_stops_and_comes_back(classifier, tmp_path):
    require_browser()
    if not any(os.access(os.path.join(d, "haproxy"), os.X_OK) for d in ["/usr/sbin", "/usr/bin"]):
        if IN_CI:
            pytest.fail("CI must run the replica tests, but haproxy is missing")
        pytest.skip("needs haproxy (sudo apt-get install haproxy)")
    lb_port, first = free_ports(1), free_ports(REPLICAS + 1) + 1
    env = {**os.environ, "REPLICAS": str(REPLICAS), "PORT": str(lb_port), "FIRST_REPLICA_PORT": str(first),
           "LOGS": str(tmp_path), "BEAR_FEEDBACK_DB": str(tmp_path / "feedback.db")}
    make = subprocess.Popen(["make", "--no-print-directory", "replicas", "APP_VENV=.venv"], cwd=ROOT, env=env,
                            stdout=open(tmp_path / "make.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{lb_port}"
    try:
        replica_urls = [f"http://127.0.0.1:{first + i}/voila/static/health.txt" for i in range(REPLICAS)]
        assert wait_for(lambda: all(up(u) for u in replica_urls) and up(url + "/voila/static/health.txt"), 180), \
            (tmp_path / "make.log").read_text()
        servers = {f"r{i + 1}": next(p for p in psutil.process_iter(["cmdline"])
                                     if f"--port={first + i}" in " ".join(p.info["cmdline"] or []))
                   for i in range(REPLICAS)}
        uploads = photos(classifier)
        with chromium() as browser:
            pages = [open_app(browser, url, timeout_ms=240_000) for _ in range(VISITORS)]
            for page, (name, data, _) in zip(pages, uploads):
                upload_file(page, name, data, "image/jpeg")
            for page, (name, _, label) in zip(pages, uploads):
                assert f"Prediction: {label}; Probability: 0." in wait_card(page, name, timeout_ms=240_000)
            where = [replica_of(page) for page in pages]
            assert set(where) == set(servers), where  # every replica serves some of the visitors
            for name, proc in servers.items():  # each visitor's kernel lives on the replica their cookie names
                assert len(kernels(proc)) >= where.count(name), (name, where)

            # One replica stops. Its visitors are told, the others notice nothing, nobody new is sent there.
            stopped = where[0]
            command, its_env, its_cwd = servers[stopped].cmdline(), servers[stopped].environ(), servers[stopped].cwd()
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
            newcomers = [open_app(browser, url, timeout_ms=240_000) for _ in range(3)]
            assert stopped not in [replica_of(p) for p in newcomers]

            page = on_it[0]  # a reload brings a working page from another replica
            page.reload()
            page.locator("#rendered_cells .bear-input button.bear-upload").wait_for(timeout=240_000)
            name, data, label = uploads[0]
            upload_file(page, "after-reload.jpg", data, "image/jpeg")
            assert f"Prediction: {label}; " in wait_card(page, "after-reload.jpg", timeout_ms=120_000)
            assert replica_of(page) != stopped and card(page, name).count() == 0

            # It starts again and takes visitors again (HAProxy sees it healthy within seconds).
            restarted = subprocess.Popen(command, cwd=its_cwd, env=its_env, stdout=open(tmp_path / "restart.log", "w"),
                                         stderr=subprocess.STDOUT)
            try:
                assert wait_for(lambda: up(replica_urls[int(stopped[1:]) - 1]), 120)
                back = []

                def lands_on_the_restarted_replica() -> bool:
                    back.append(replica_of(open_app(browser, url, timeout_ms=240_000)))
                    return back[-1] == stopped

                assert wait_for(lands_on_the_restarted_replica, 90, step=1), back
            finally:
                restarted.terminate()
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(30)
