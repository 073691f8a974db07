"""The package's wings and which way imports run between them: import-linter's contracts in pyproject.toml."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

LINT = str(Path(sys.executable).parent / "lint-imports")
WINGS = ["inference", "page", "model", "training", "server", "api", "cli"]


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LINT, "--config", str(root / "pyproject.toml")], cwd=root, capture_output=True, text=True,
                          timeout=300)


def copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "bear_classifier", tmp_path / "bear_classifier", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_wings_keep_their_contracts():
    r = lint(ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "2 kept, 0 broken" in r.stdout


def test_a_page_module_that_imports_torch_breaks_the_serving_contract(tmp_path):
    root = copy_of_the_package(tmp_path)
    card = root / "bear_classifier" / "page" / "card.py"
    card.write_text(card.read_text().replace("from __future__ import annotations\n",
                                             "from __future__ import annotations\n\nimport torch  # noqa\n", 1))
    r = lint(root)
    assert r.returncode != 0
    assert "Serving never imports torch or fastai" in r.stdout and "BROKEN" in r.stdout
    assert "bear_classifier.page.card -> torch" in r.stdout


def test_inference_reaching_up_into_the_page_breaks_the_layers(tmp_path):
    root = copy_of_the_package(tmp_path)
    images = root / "bear_classifier" / "inference" / "images.py"
    images.write_text(images.read_text() + "\nfrom ..page import feedback  # noqa\n")
    r = lint(root)
    assert r.returncode != 0 and "Imports run downwards" in r.stdout and "BROKEN" in r.stdout


def test_readmes_map_names_every_wing_that_ls_shows():
    package = sorted(p.name for p in (ROOT / "bear_classifier").iterdir() if (p / "__init__.py").exists())
    assert package == sorted(WINGS)
    table = (ROOT / "README.md").read_text().split("## What's where", 1)[1].split("\n## ", 1)[0]
    for wing in WINGS:
        assert f"`bear_classifier/{wing}/`" in table, wing
        for module in (ROOT / "bear_classifier" / wing).glob("*.py"):
            if module.name != "__init__.py":
                assert f"`{module.stem}`" in table or f"`{module.name}`" in table, f"{wing}/{module.name}"


# Runs `python -m bear_classifier ARGS` as the serving set would: torch, fastai and timm can't be imported at all.
WITHOUT_TORCH = """import runpy, sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "torchvision", "fastai", "timm"}:
            raise ModuleNotFoundError(f"No module named {name!r} (the serving set has no torch)", name=name)
sys.meta_path.insert(0, NoTorch())
sys.argv = ["bear_classifier", *sys.argv[1:]]
runpy.run_module("bear_classifier", run_name="__main__")
"""


def test_the_serving_sets_commands_run_without_torch(tmp_path):
    """The container, Binder and `make app` install no torch: the commands a deployer runs there must work."""
    env = {**os.environ, "BEAR_FEEDBACK_DB": str(tmp_path / "f.db"), "BEAR_MODELS": str(tmp_path / "models")}
    env.pop("BEAR_MODEL", None)

    def run(*args):
        return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)

    for args in (["--help"], ["train", "--help"], ["mcp", "--help"], ["models", "list"]):
        r = run(*args)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r.stderr[-2000:])
    r = run("predict", "examples/grizzly.jpg")
    assert r.returncode == 0 and "Prediction: grizzly" in r.stdout, r.stderr[-2000:]
    r = run("models", "promote", "export.onnx")  # the first version: nothing served to compare it with
    assert r.returncode == 0, r.stderr[-2000:]
    r = run("review", "--feedback", "--out", str(tmp_path / "review"))  # no page has written a store here yet
    assert r.returncode == 2 and r.stderr.startswith(f"error: There is no feedback store at {tmp_path / 'f.db'}")
    assert not (tmp_path / "f.db").exists()  # nor made an empty one
    from bear_classifier.page.feedback import FeedbackStore

    FeedbackStore(f"sqlite:///{tmp_path / 'f.db'}").engine.dispose()  # as the page leaves it
    r = run("review", "--feedback", "--out", str(tmp_path / "review"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    r = run("train", "--data", "examples", "--out", str(tmp_path / "model"))  # training needs requirements.txt: say so
    assert r.returncode == 2 and r.stderr.strip() == ("error: train needs the training set (torch is not installed "
                                                      "here): pip install -r requirements.txt"), r.stderr[-2000:]


def test_the_command_line_the_page_and_the_server_start_without_importing_torch():
    """What import-linter can't see: names imported at run time. `python -m bear_classifier predict`, the page's
    first cell, the server and its API run on the serving set, which has no torch."""
    code = ("import sys, bear_classifier.__main__, bear_classifier.page.app, bear_classifier.server.guard, "
            "bear_classifier.server.visitors, bear_classifier.api.routes; from bear_classifier import Client; "
            "heavy = {'torch', 'fastai', 'timm'} & set(sys.modules); assert not heavy, heavy")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
