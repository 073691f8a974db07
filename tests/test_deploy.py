"""Deployment files: the container image's recipe, its command line served for real, HAProxy's and Kubernetes' files."""
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from browser import free_port, kernels, serve, wait_for
from conftest import IN_CI, ROOT

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(BIN))
    if not path:
        if IN_CI:
            pytest.fail(f"CI must run the deployment tests, but {name} is missing")
        pytest.skip(f"needs {name}")
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
    env = {**os.environ, "JUPYTER_PATH": str(ROOT / "share" / "jupyter"), "BEAR_FEEDBACK_DB": str(tmp_path / "f.db")}
    health = re.search(r"http://127\.0\.0\.1:8866(/[^'\"]+)", (ROOT / "Dockerfile").read_text()).group(1)
    with serve(cmd, port, health, ROOT, tmp_path / "voila.log", env) as (url, _, proc):
        assert wait_for(lambda: len(kernels(proc)) == 1, 60)  # the preheated kernel
        for _ in range(5):
            assert urllib.request.urlopen(url + health, timeout=5).status == 200
        assert len(kernels(proc)) == 1  # health checks start nothing
        page = urllib.request.urlopen(url + "/", timeout=60).read().decode()
        assert "Is it a bear?" in page and "Upload photos" in page


def test_kubernetes_manifests_validate_strictly(tmp_path):
    exe = tool("kubernetes-validate")
    manifest = ROOT / "deploy" / "kubernetes" / "bear-classifier.yaml"
    r = subprocess.run([exe, "--strict", str(manifest)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("passed") == 3  # Deployment, Service, Ingress
    broken = tmp_path / "broken.yaml"
    broken.write_text(manifest.read_text().replace("readinessProbe:", "readynessProbe:"))
    assert subprocess.run([exe, "--strict", str(broken)], capture_output=True, text=True).returncode != 0


def test_kubernetes_probes_and_ingress_keep_visitors_on_their_kernel():
    import yaml

    docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "bear-classifier.yaml").read_text())}
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    docker_health = re.search(r"http://127\.0\.0\.1:8866(/[^'\"]+)", (ROOT / "Dockerfile").read_text()).group(1)
    assert container["readinessProbe"]["httpGet"]["path"] == docker_health
    assert container["livenessProbe"]["httpGet"]["path"] == docker_health
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
