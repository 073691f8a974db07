"""Deployment files: the container image's recipe, its command line served for real, HAProxy's and Kubernetes' files."""
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from browser import free_port, kernels, serve, wait_for
from conftest import ROOT, missing

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(BIN))
    if not path:
        missing(name, "see README: Run it")
    return path


def dockerfile_cmd() -> list[str]:
    line = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    return json.loads(line[4:])


def test_dockerfile_passes_hadolint():
    r = subprocess.run([tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM python\nRUN pip install voila\nCMD voila app.ipynb\n")
    r = subprocess.run([tool("hadolint"), str(tmp_path / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode != 0 and "DL3006" in r.stdout  # untagged base image


def test_dockerfile_serves_the_serving_set_only_as_a_non_root_user():
    text = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -r requirements-serve.txt" in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert "VOLUME /data" in text and "HEALTHCHECK" in text
    from test_packaging import pins

    assert not {"torch", "fastai"} & set(pins("requirements-serve.txt"))


def test_the_containers_command_line_serves_the_app_and_its_health_check_starts_no_kernel(tmp_path):
    """The Dockerfile's exact CMD, started here (its port swapped for a free one), serves the page."""
    cmd = dockerfile_cmd()
    assert cmd[0] == "voila" and "--Voila.ip=0.0.0.0" in cmd  # Voila listens on localhost only unless told
    port = free_port()
    cmd = [str(BIN / "voila") if c == "voila" else (f"--port={port}" if c.startswith("--port=") else c) for c in cmd]
    env = {**os.environ, "JUPYTER_PATH": str(ROOT / "share" / "jupyter"), "BEAR_FEEDBACK_DB": str(tmp_path / "f.db"),
           "PYTHONPATH": str(ROOT)}  # the server imports this checkout's package, as the image's does its own
    health = re.search(r"http://127\.0\.0\.1:8866(/[^'\"]+)", (ROOT / "Dockerfile").read_text()).group(1)
    with serve(cmd, port, health, ROOT, tmp_path / "voila.log", env) as (url, _, proc):
        pool = json.loads((ROOT / "voila.json").read_text())["VoilaConfiguration"]["default_pool_size"]
        assert wait_for(lambda: len(kernels(proc)) == pool, 90)  # the preheated kernels
        for _ in range(5):
            assert urllib.request.urlopen(url + health, timeout=30).status == 200  # (slow only on a loaded machine)
        assert len(kernels(proc)) == pool  # health checks start nothing
        page = urllib.request.urlopen(url + "/", timeout=60).read().decode()
        assert "Is it a bear?" in page and "Upload photos" in page
        assert wait_for(lambda: ready(url + "/api/ready"), 60)  # the API, and its model (the Kubernetes readiness probe)


def ready(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=5).status == 200
    except OSError:
        return False


def test_kubernetes_manifests_validate_strictly(tmp_path):
    exe = tool("kubernetes-validate")
    manifest = ROOT / "deploy" / "kubernetes" / "bear-classifier.yaml"
    r = subprocess.run([exe, "--strict", str(manifest)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("passed") == 4  # Deployment, Service, the page's Ingress, the API's
    broken = tmp_path / "broken.yaml"
    broken.write_text(manifest.read_text().replace("readinessProbe:", "readynessProbe:"))
    assert subprocess.run([exe, "--strict", str(broken)], capture_output=True, text=True).returncode != 0


def test_kubernetes_probes_and_ingress_keep_visitors_on_their_kernel():
    import yaml

    docs = {d["metadata"]["name"] if d["kind"] == "Ingress" else d["kind"]: d
            for d in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "bear-classifier.yaml").read_text())}
    docs["Ingress"] = docs.pop("bear-classifier")
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    docker_health = re.search(r"http://127\.0\.0\.1:8866(/[^'\"]+)", (ROOT / "Dockerfile").read_text()).group(1)
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/ready"  # the API's model loaded (test_api.py)
    assert container["livenessProbe"]["httpGet"]["path"] == docker_health
    api = docs["bear-classifier-api"]  # the API's photos get the API's body limit, the rest 1 MB
    assert api["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/api/classify"
    assert api["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "20m"
    notes = docs["Ingress"]["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600


def test_haproxy_configuration_is_valid(tmp_path):
    exe = tool("haproxy")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text((ROOT / "deploy" / "haproxy.cfg").read_text() + "    server r1 127.0.0.1:8871 cookie r1\n")
    r = subprocess.run([exe, "-c", "-f", str(cfg)], capture_output=True, text=True,
                       env={**os.environ, "BEAR_LB_BIND": "127.0.0.1:8080"})
    assert r.returncode == 0, r.stdout + r.stderr


class Echo(http.server.BaseHTTPRequestHandler):
    """A stand-in replica that records what HAProxy forwards: each request's headers and body size."""

    seen: list = []
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self._answer(0)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self._answer(len(self.rfile.read(length)))

    def _answer(self, body_size: int) -> None:
        if not self.path.endswith("health.txt"):
            Echo.seen.append((self.command, self.path, {k.lower(): ", ".join(self.headers.get_all(k)) for k in self.headers}, body_size))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def balancer(tmp_path_factory):
    """deploy/haproxy.cfg, run by the real haproxy, in front of one Echo replica: (port, what the replica saw)."""
    exe = tool("haproxy")
    replica = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=replica.serve_forever, daemon=True).start()
    cfg = tmp_path_factory.mktemp("haproxy") / "haproxy.cfg"
    cfg.write_text((ROOT / "deploy" / "haproxy.cfg").read_text()
                   + f"    server r1 127.0.0.1:{replica.server_port} cookie r1\n")
    port = free_port()
    proc = subprocess.Popen([exe, "-f", str(cfg), "-db"], env={**os.environ, "BEAR_LB_BIND": f"127.0.0.1:{port}"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: raw(port, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")[:12]
                        == b"HTTP/1.1 200", 20)
        yield port, Echo.seen
    finally:
        proc.terminate()
        proc.wait(10)
        replica.shutdown()


def raw(port: int, head: bytes, body_chunks=(), timeout: float = 10) -> bytes:
    """Send a request as bytes (headers, then each body chunk as it goes) and read the answer; b"" if none."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(head)
            try:
                for chunk in body_chunks:
                    s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused midway: the answer is already there
            return s.recv(65536)
    except OSError:
        return b""


def test_haproxy_refuses_a_60_mb_chunked_body_and_one_over_1_mb_with_a_length(balancer):
    port, seen = balancer
    mib = b"x" * 2**20
    chunked = (f"{len(mib):x}\r\n".encode() + mib + b"\r\n" for _ in range(60))
    answer = raw(port, b"POST /voila/api/shutdown/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                 chunked)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    answer = raw(port, b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n", [b"x" * 2_000_000])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    answer = raw(port, b"POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
    assert answer.startswith(b"HTTP/1.1 200")  # a small body with its length passes
    # The API's photos: up to its own limit (BEAR_API_MAX_MB, 20 MB), on /api/classify only, never chunked.
    photos = b"\xff" * (5 * 2**20)
    answer = raw(port, b"POST /api/classify HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                 % len(photos), [photos])
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
    for path, size in [(b"/api/classify", 21 * 2**20), (b"/api/model", 2 * 2**20)]:
        answer = raw(port, b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (path, size), [b"x" * 2**20])
        assert answer.startswith(b"HTTP/1.1 413"), (path, answer[:80])
    answer = raw(port, b"POST /api/classify HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                 [b"5\r\nhello\r\n0\r\n\r\n"])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    assert [(m, p, size) for m, p, _, size in seen if m == "POST"] == [("POST", "/small", 5),
                                                                       ("POST", "/api/classify", len(photos))]


def test_haproxy_sets_x_forwarded_for_itself_marks_its_cookie_samesite_and_keeps_voila_query_inside(balancer):
    port, seen = balancer
    answer = raw(port, b"GET /page HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.66\r\n"
                       b"X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n")
    cookie = next(line for line in answer.decode().split("\r\n") if line.lower().startswith("set-cookie: bear_replica="))
    assert {"httponly", "samesite=lax"} <= {f.strip().lower() for f in cookie.split(";")[1:]}, cookie
    headers = next(h for m, p, h, _ in seen if p == "/page")
    assert headers["x-forwarded-for"] == "127.0.0.1"  # the connection's address, not the client's word
    assert headers["x-forwarded-proto"] == "http"
    assert raw(port, b"GET /voila/query/4b1c7e2a-1d2e-4f3a-9b8c-7d6e5f4a3b2c HTTP/1.1\r\nHost: a\r\n"
                     b"Connection: close\r\n\r\n").startswith(b"HTTP/1.1 403")
