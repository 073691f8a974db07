import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))  # corpus.py

SHARED = ROOT.parent / "shared" / "data"
BEARS = SHARED / "bears"
IN_CI = bool(os.environ.get("CI"))


def need_shared():
    """Skip (with the reason) where the shared photos are absent; CI has them."""
    if not BEARS.is_dir():
        pytest.skip(f"needs the shared training photos at {BEARS}")


@pytest.fixture(scope="session")
def classifier():
    from bear_classifier.predict import Classifier

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
