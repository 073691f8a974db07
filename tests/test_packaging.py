"""Packaging: pins are one source of truth, serving needs no torch, the notebook stays short."""
import json
import re
import shutil
import subprocess
import tomllib

import pytest

from conftest import ROOT


def pins(path) -> dict[str, str]:
    """{package: version} of a requirements file, following its -r includes and the package itself (".": its
    pyproject.toml dependencies)."""
    out = {}
    for line in (ROOT / path).read_text().splitlines():
        if line.startswith("-r "):
            out |= pins((ROOT / path).parent.relative_to(ROOT) / line[3:].strip())
        if line.strip() == ".":
            out |= package_pins()
        out |= pin(line)
    return out


def pin(line: str) -> dict[str, str]:
    m = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[a-z,]+\])?==([^\s#]+)", line)
    return {m.group(1).lower().replace("_", "-"): m.group(2)} if m else {}


def package_pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {k: v for d in deps for k, v in pin(d).items()}
    assert len(out) == len(deps), "every dependency of the package is pinned exactly"
    return out


def test_requirements_serve_installs_the_package_with_its_pins():
    assert "." in (ROOT / "requirements-serve.txt").read_text().splitlines()
    assert pins("requirements-serve.txt") == package_pins()


def test_requirements_pin_what_the_model_card_was_exported_with():
    card = json.loads((ROOT / "export.json").read_text())
    req = pins("requirements.txt")
    for lib in ["torch", "torchvision", "fastai", "fastcore", "timm", "pillow"]:
        assert req[lib] == card["versions"][lib], lib
    for lib in ["voila", "ipykernel", "ipywidgets", "jupyterlab-widgets"]:
        assert lib in req, f"{lib} must be pinned for the app to render"


def test_serving_needs_neither_torch_nor_fastai_and_binder_installs_only_that():
    serve, everything, binder = pins("requirements-serve.txt"), pins("requirements.txt"), pins("binder/requirements.txt")
    assert not {"torch", "torchvision", "fastai", "timm"} & set(serve)
    assert {"voila", "ipywidgets", "anywidget", "onnxruntime", "pillow", "pillow-heif", "sqlalchemy"} <= set(serve)
    assert binder == serve  # Binder serves the page: the serving set, nothing more
    assert set(serve) <= set(everything) and all(everything[k] == v for k, v in serve.items())


def test_environment_yml_installs_the_same_pins():
    env = (ROOT / "environment.yml").read_text()
    assert "- -r requirements.txt" in env and "python=3.11" in env


def test_repo2docker_builds_from_binder_with_the_serving_set(tmp_path):
    exe = shutil.which("repo2docker") or str(ROOT / ".venv" / "bin" / "repo2docker")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    repo = tmp_path / "repo"
    for f in files:  # a clean copy: what Binder would clone
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, repo / f)
    r = subprocess.run([exe, "--no-build", "--debug", str(repo)], capture_output=True, text=True, timeout=300)
    dockerfile = r.stdout + r.stderr
    assert r.returncode == 0, dockerfile[-2000:]
    assert "python=3.11" in dockerfile
    assert 'pip install --no-cache-dir -r "binder/requirements.txt"' in dockerfile
    assert "binder/postBuild" in dockerfile  # the websocket limit for large photos
    assert "requirements.txt\" " not in dockerfile.replace('binder/requirements.txt"', "")  # root file not used alone
    assert "torch" not in pins("binder/requirements.txt")


def test_voila_config_for_a_public_deployment():
    cfg = json.loads((ROOT / "voila.json").read_text())
    limit = cfg["Voila"]["tornado_settings"]["websocket_max_message_size"]
    from bear_classifier.inference.images import MAX_BYTES

    assert limit >= MAX_BYTES + 2**20  # uploads up to the app's limit (plus message framing) must reach the kernel
    assert str(limit) in (ROOT / "binder" / "postBuild").read_text()
    voila = cfg["VoilaConfiguration"]
    assert voila["show_tracebacks"] is False and voila["strip_sources"] is True
    assert voila["file_allowlist"] == []
    assert cfg["MappingKernelManager"]["cull_idle_timeout"] > 0


def test_readme_binder_badge_opens_the_app():
    readme = (ROOT / "README.md").read_text()
    assert "urlpath=voila%2Frender%2Fapp.ipynb" in readme or "urlpath=voila/render/app.ipynb" in readme


def test_app_notebook_is_short_and_committed_without_outputs():
    nb = json.loads((ROOT / "app.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert sum(len("".join(c["source"]).splitlines()) for c in code) <= 11
    assert all(not c.get("outputs") for c in code)


def test_another_notebook_served_from_the_same_environment_is_left_alone(tmp_path):
    """Installing the package puts its Voila page hook where every Voila of that environment reads it: a notebook of
    someone else's, in a folder without this app's voila.json, renders with no error of ours and is not signed."""
    import urllib.request

    import nbformat
    from nbformat.sign import NotebookNotary

    from browser import voila

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('hello from ' + 'elsewhere')")])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "other.ipynb")
    with voila(notebook="other.ipynb", cwd=tmp_path) as (url, log, _):
        with urllib.request.urlopen(url + "/", timeout=120) as r:
            page = r.read().decode()
    assert "hello from elsewhere" in page
    said = log.read_text()
    assert "model card" not in said and "Traceback" not in said, said[-2000:]
    assert not NotebookNotary().check_signature(nbformat.read(tmp_path / "other.ipynb", as_version=4))
