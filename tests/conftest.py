import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))  # corpus.py

# Under pytest-xdist (`make test` runs three workers on two cores), one thread per worker and per process it starts
# (kernels, notebooks): torch's and OpenMP's own pools, each the size of the machine, would fight over the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

# The page and the API log answers to feedback.db in the folder they run from, or to the store the environment names:
# the tests' own go to a folder of their own, never to a developer's store (a test that reads the store names its own).
_FEEDBACK = tempfile.mkdtemp(prefix="bear-feedback-")
atexit.register(shutil.rmtree, _FEEDBACK, ignore_errors=True)
os.environ.pop("BEAR_FEEDBACK_URL", None)
os.environ["BEAR_FEEDBACK_DB"] = str(Path(_FEEDBACK) / "feedback.db")

SHARED = ROOT.parent / "shared" / "data"
BEARS = SHARED / "bears"
IN_CI = bool(os.environ.get("CI"))


def missing(what: str, install: str):
    """A tool some tests need is not here: skip them, saying how to install it; in CI, where every test must run, fail."""
    if IN_CI:
        pytest.fail(f"CI must run every test, but {what} is missing ({install})")
    pytest.skip(f"needs {what} ({install})")


def execute_notebook(nb, path: Path, cell_timeout: int, deadline: int, env: dict | None = None):
    """nbclient's NotebookClient.execute on a copy of `nb` (returned, with its outputs), run from `path`, within
    `deadline` seconds for the whole notebook. nbclient's own timeout is per cell; a client that loses a kernel's
    message waits for ever with the kernel idle (seen once in a CI run; jupyter/jupyter_client#922), so a run past
    the deadline has its kernel killed and the notebook runs once more, from the start."""
    import copy
    import signal
    import threading

    from nbclient import NotebookClient

    for attempt in (1, 2):
        run, outcome = copy.deepcopy(nb), {}
        client = NotebookClient(run, timeout=cell_timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path)}})

        def execute():
            try:
                client.execute(env=env or dict(os.environ))
            except BaseException as e:  # raised where the test can see it, below
                outcome["error"] = e

        thread = threading.Thread(target=execute, daemon=True)
        thread.start()
        thread.join(deadline)
        if not thread.is_alive():
            if "error" in outcome:
                raise outcome["error"]
            return run
        pid = getattr(getattr(getattr(client, "km", None), "provisioner", None), "pid", None)
        if pid:
            os.kill(pid, signal.SIGKILL)
        print(f"the notebook's run {attempt} passed its {deadline} s deadline: kernel killed", file=sys.stderr)
    pytest.fail(f"The notebook did not finish within {deadline} s, twice.")


def need_shared():
    """Skip (with the reason) where the shared photos are absent; CI has them."""
    if not BEARS.is_dir():
        pytest.skip(f"needs the shared training photos at {BEARS}")


# Clear photos of each species (they fill their photos), and street and building scenes from the not-bear photos.
CORNER_BEARS = [("black/7b282c570e141e32.jpg", "black"), ("grizzly/2e9fbf26bb12b3d2.jpg", "grizzly"),
                ("teddy/2b43cfa0f543bb9f.jpg", "teddy")]
CORNER_SCENES = ["street_015ba8bde42a.jpg", "street_01943da1f987.jpg", "buildings_04e1c1a820aa.jpg",
                 "buildings_08e1bf444703.jpg"]


def bears_in_corners(scenes: list[str] = CORNER_SCENES, side: float = 0.4):
    """(image, label, (x, y)): each CORNER_BEARS photo pasted at (x, y), each corner of each not-bear scene
    (448 px), its side `side` of the scene's: by default a bear beside a road or a house, as visitors photograph them."""
    from bear_classifier.inference.images import open_image

    need_shared()
    for scene_file in scenes:
        scene = open_image((SHARED / "not_bear" / scene_file).read_bytes()).resize((448, 448))
        for bear_file, label in CORNER_BEARS:
            bear = open_image((BEARS / bear_file).read_bytes()).resize((round(448 * side),) * 2)
            for x in (0, 448 - bear.width):
                for y in (0, 448 - bear.height):
                    img = scene.copy()
                    img.paste(bear, (x, y))
                    yield img, label, (x, y)


@pytest.fixture(scope="session")
def classifier():
    from bear_classifier.inference.predict import Classifier

    return Classifier.load()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A folder per class of generated 96 px images, distinct enough for a head to separate."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny")
    colours = {"black": (25, 25, 30), "grizzly": (140, 95, 50), "teddy": (235, 170, 200)}
    rng = np.random.default_rng(0)
    for label, rgb in colours.items():
        (root / label).mkdir()
        for i in range(12):
            arr = np.clip(np.array(rgb) + rng.normal(0, 40, (96, 96, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / label / f"{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="session")
def tiny_negatives(tmp_path_factory):
    """Generated not-bear photos named `<subject>_<n>.jpg`, as in the shared not_bear folder."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("not_bear")
    rng = np.random.default_rng(1)
    for subject in ["noise", "sky", "grass", "brick_wall", "sand", "night"]:
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(root / f"{subject}_{i}.jpg")
    return root
