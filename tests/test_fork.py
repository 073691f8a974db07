"""Make it yours: a fork with other classes, in a folder with no ../shared, no export.* and no bear classes file.

Three generated patterns (stripes, checks, dots) stand for a newcomer's photos in DATA/<class>/*.jpg and a
classes.toml of their own words. Training, predicting and the page all go through the command line and a real
Voila server, as a newcomer would use them.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bear_classifier.training.train import TEMPERATURE_BOUNDS
from conftest import ROOT

FORK_FILES = ["bear_classifier", "app.ipynb", "voila.json", "share", "pyproject.toml"]
PATTERNS = ["stripes", "checks", "dots"]
WORDS = """title = "Which pattern?"
[none]
name = "No pattern I know"
[[class]]
label = "stripes"
name = "Striped cloth"
[[class]]
label = "checks"
name = "Checked cloth"
[[class]]
label = "dots"
name = "Polka dots"
"""


def pattern(kind: str, rng: np.random.Generator, side: int = 96) -> Image.Image:
    """A generated photo of `kind` (stripes, checks or dots) in two random, distinct colours, with sensor noise."""
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    while np.abs(a - b).sum() < 200:
        b = rng.integers(0, 256, 3)
    y, x = np.mgrid[:side, :side]
    if kind == "stripes":
        angle, period = rng.uniform(0, np.pi), rng.uniform(8, 20)
        mask = np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period + rng.uniform(0, 6)) > 0
        arr = np.where(mask[..., None], a, b)
    elif kind == "checks":
        cell = rng.integers(8, 20)
        arr = np.where((((x + rng.integers(cell)) // cell + (y + rng.integers(cell)) // cell) % 2 == 0)[..., None], a, b)
    else:
        img = Image.new("RGB", (side, side), tuple(map(int, a)))
        draw, r = ImageDraw.Draw(img), rng.integers(4, 9)
        for cx, cy in rng.integers(0, side, (rng.integers(8, 16), 2)):
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(map(int, b)))
        arr = np.asarray(img)
    return Image.fromarray(np.clip(arr + rng.normal(0, 12, arr.shape), 0, 255).astype(np.uint8))


def photos(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for kind, n in counts.items():
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pattern(kind, rng).save(root / kind / f"{kind}_{i}.jpg", quality=90)
    return root


def cli(*args, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m bear_classifier ...` run in `cwd`, a fork: its own copy of the package is the one imported."""
    env = {k: v for k, v in __import__("os").environ.items() if k != "BEAR_MODEL"}
    return subprocess.run([sys.executable, "-m", "bear_classifier", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def fork(tmp_path_factory) -> Path:
    """A copy of the project as a newcomer forks it, with their photos and their classes file, and no model."""
    root = tmp_path_factory.mktemp("fork") / "patterns"
    root.mkdir()
    for name in FORK_FILES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, root / name)
    shutil.rmtree(root / "bear_classifier" / "__pycache__", ignore_errors=True)
    (root / "classes.toml").write_text(WORDS)
    photos(root / "data", {k: 12 for k in PATTERNS})
    for kind in PATTERNS:  # a newcomer's photos sorted by year: a class's photos at any depth are that class
        (root / "data" / kind / "2019").mkdir()
        for f in sorted((root / "data" / kind).glob("*.jpg"))[:4]:
            f.rename(f.parent / "2019" / f.name)
    assert not (root.parent / "shared").exists() and not list(root.glob("export.*"))
    return root


@pytest.fixture(scope="module")
def trained(fork) -> Path:
    r = cli("train", "--data", "data", "--out", "model", "--epochs", "1", "--size", "64", "--bs", "8", "--lr", "1e-2",
            cwd=fork)
    assert r.returncode == 0, r.stderr[-3000:]
    (fork / "train.out").write_text(r.stdout)
    return fork / "model"


def test_train_writes_the_model_its_onnx_file_and_a_card_in_the_classes_words(trained):
    import json

    from bear_classifier.classes import Classes

    assert {p.name for p in trained.iterdir()} >= {"export.pkl", "export.onnx", "export.json", "reports"}
    card = json.loads((trained / "export.json").read_text())
    classes = Classes.from_dict(card["classes"])
    assert classes.labels == PATTERNS and classes.title == "Which pattern?"  # the fork's classes.toml, found by itself
    assert classes.name("dots") == "Polka dots" and classes.vocab[-1] == "none"
    assert card["validation"] == "20% of each class, chosen by a hash of the file names (seed 42)"
    assert card["valid_metrics"]["n"] == 6  # no ImageNet rows: "none of these" is learned from the photos alone
    assert card["gate"]["kind"].startswith("distance to the training classes")
    low, high = TEMPERATURE_BOUNDS  # no temperature in the fork's classes file: fitted on its validation photos
    assert low <= card["temperature"] <= high
    train, valid = card["data"]["train"], card["data"]["valid"]
    assert all(train[k] + valid[k] == 12 and valid[k] >= 2 for k in PATTERNS) and train["none"] == valid["none"] == 0
    confusion = card["valid_metrics"]["confusion"]  # the last line says it in words, "none of these" included
    right, refused = sum(confusion[i][i] for i in range(3)), sum(row[3] for row in confusion[:3])
    last = (trained.parent / "train.out").read_text().strip().splitlines()[-1]
    photos_ = "photo" if refused == 1 else "photos"
    assert last.startswith(f"validation: {right} of 6 photos right") and f"{refused} {photos_} of the classes answered " \
        '"No pattern I know"' in last, last


def test_predict_answers_new_photos_in_the_classes_words(trained, tmp_path):
    new = photos(tmp_path, {k: 2 for k in PATTERNS}, seed=7)
    files = sorted(new.rglob("*.jpg"))
    r = cli("predict", "--model", trained / "export.onnx", *files, cwd=trained.parent)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    lines = r.stdout.splitlines()
    words = {"stripes": "Striped cloth", "checks": "Checked cloth", "dots": "Polka dots"}
    right = [f"Prediction: {f.parent.name};" in line and line.endswith(f"({words[f.parent.name]})")
             for f, line in zip(files, lines)]
    assert len(lines) == 6 and sum(right) >= 5, lines


def test_evaluate_and_review_read_the_classes_from_the_model(trained, fork, tmp_path):
    """`evaluate` re-draws the model's own validation split; `review` ranks the fork's photos and `review --apply`
    accepts the fork's labels only."""
    import csv
    import json

    r = cli("evaluate", "--model", trained / "export.pkl", "--data", "data", "--reports", tmp_path / "reports", cwd=fork)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout[r.stdout.index("{"):])
    card = json.loads((trained / "export.json").read_text())
    assert result["n"] == card["valid_metrics"]["n"] and result["accuracy"] == card["valid_metrics"]["accuracy"]
    r = cli("review", "--model", trained / "export.pkl", "--data", "data", "--out", tmp_path / "review", "--top", "4",
            cwd=fork)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "review" / "review.csv")))
    assert len(rows) == 4 and {row["label"] for row in rows} <= set(PATTERNS)
    then = r.stdout.split("then: python -m bear_classifier ")[1].split()  # the command review says to run next
    assert then[then.index("--labels") + 1] == "data-cleaning.csv"  # beside the fork's photos, as the notebook keeps it
    for mark, expected in [("zebras", 2), ("dots", 0)]:
        rows[0]["new_label"] = mark
        with open(tmp_path / "review" / "review.csv", "w", newline="") as f:
            w = csv.DictWriter(f, list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        r = cli(*then, cwd=fork)
        assert r.returncode == expected and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert (fork / "data-cleaning.csv").read_text().splitlines()[1] == f"{rows[0]['file']},dots"
    assert "train again with --labels data-cleaning.csv" in r.stdout


def test_the_page_serves_the_forks_model(trained, fork, tmp_path):
    """`BEAR_MODEL=OUT/export.onnx make app`: the page answers with the fork's classes, every one in its bars, is
    titled by them and never says "bear"."""
    from browser import chromium, open_app, require_browser, upload_file, voila, wait_card

    require_browser()
    photo = tmp_path / "mine.jpg"
    pattern("stripes", np.random.default_rng(11)).resize((300, 300)).save(photo)
    env = {"BEAR_MODEL": str(trained / "export.onnx"), "BEAR_FEEDBACK": "off",
           "JUPYTER_PATH": str(fork / "share" / "jupyter")}
    with voila(cwd=fork, env=env, log=tmp_path / "voila.log") as (url, log, _), chromium() as browser:
        page = open_app(browser, url)
        upload_file(page, "mine.jpg", photo.read_bytes(), "image/jpeg")
        text = wait_card(page, "mine.jpg")
        title, whole = page.title(), page.inner_text("body")
    names = ["Striped cloth", "Checked cloth", "Polka dots", "No pattern I know"]  # the fork's classes.toml
    assert "Prediction: " in text and all(name in text for name in names), text
    assert title == "Which pattern?" and "Which pattern?" in whole and "bear" not in whole.lower(), whole


def test_a_new_class_head_starts_from_what_the_untrained_network_tells_apart(fork):
    """Classes without ImageNet rows: the head starts from a logistic regression on the untrained network's
    features of the training photos, so it is right before any fine-tuning where a fresh head is at chance."""
    from bear_classifier.model.backbone import normalization
    from bear_classifier.classes import Classes
    from bear_classifier.training.train import create_learner, probe_head, split_dataloaders

    root = fork / "data"
    items = sorted((p, p.relative_to(root).parts[0]) for p in root.rglob("*.jpg"))
    train, valid = items[::2], items[1::2]
    classes = Classes.for_data(root, fork / "classes.toml")
    dls = split_dataloaders(train, valid, vocab=classes.vocab, bs=8, size=64, stats=normalization("tf_efficientnet_lite0"))
    learn = create_learner(dls, classes)
    assert probe_head(learn, [(p, y) for p, y in train if y == "dots"]) is False  # one class: nothing to regress
    assert probe_head(learn, train) is True
    assert learn.validate()[1] >= 0.9  # 0.56 from the head's random start, in one run


def test_a_classes_file_beside_other_folders_is_named_in_a_warning_not_ignored(tmp_path, monkeypatch, caplog):
    """Without --classes, a classes.toml in the working directory whose labels aren't the data's folders (a typo in
    a fork's file, say) leaves the folder names as the classes: training says so in one line."""
    from bear_classifier.classes import Classes

    for label in PATTERNS:
        (tmp_path / "data" / label).mkdir(parents=True)
    (tmp_path / "classes.toml").write_text(WORDS.replace('label = "stripes"', 'label = "stripe"'))
    monkeypatch.chdir(tmp_path)
    classes = Classes.for_data(tmp_path / "data")
    assert classes.labels == sorted(PATTERNS) and classes.title != "Which pattern?"
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1 and "names the classes checks, dots, stripe, but" in said[0], said


@pytest.mark.parametrize("case, expected", [
    ("one class", "has one class (stripes): a classifier needs two or more"),
    ("two photos", "Class 'dots' has 2 usable photos"),
    ("no photos", "No photos found in"),
    ("wrong classes file", "names the classes dots, stripes, zebras but"),
    ("no such folder", "does not exist"),
    ("no such ImageNet row", "Class 'dots': imagenet must list ImageNet-1k rows, 0 to 999"),
    ("the bears' gate on other classes", "The recipe's imagenet_gate doesn't read the ImageNet rows of dots, stripes"),
    ("a fitted number in the classes file", "temperature belongs in a recipe file (recipe.toml)"),
])
def test_a_newcomers_mistakes_get_one_line_that_says_what_to_do(fork, tmp_path, case, expected):
    data = tmp_path / "data"
    args = []
    if case == "one class":
        photos(data, {"stripes": 6})
    elif case == "two photos":
        photos(data, {"stripes": 6, "dots": 2})
    elif case == "no photos":
        (data / "stripes").mkdir(parents=True)
        (data / "dots").mkdir()
        (data / "dots" / "notes.txt").write_text("no photos here")
    elif case == "wrong classes file":
        photos(data, {"stripes": 6, "dots": 6})
        (tmp_path / "mine.toml").write_text('[[class]]\nlabel = "stripes"\n[[class]]\nlabel = "dots"\n'
                                            '[[class]]\nlabel = "zebras"\n')
        args = ["--classes", tmp_path / "mine.toml"]
    elif case == "no such ImageNet row":
        photos(data, {"stripes": 6, "dots": 6})
        (tmp_path / "mine.toml").write_text('[[class]]\nlabel = "stripes"\n[[class]]\nlabel = "dots"\nimagenet = [1500]\n')
        args = ["--classes", tmp_path / "mine.toml"]
    elif case == "the bears' gate on other classes":  # the bear model's recipe, on a fork's folders
        photos(data, {"stripes": 6, "dots": 6})
        args = ["--recipe", ROOT / "recipe.toml"]
    elif case == "a fitted number in the classes file":  # where it used to be
        photos(data, {"stripes": 6, "dots": 6})
        (tmp_path / "mine.toml").write_text('temperature = 0.9\n[[class]]\nlabel = "stripes"\n[[class]]\nlabel = "dots"\n')
        args = ["--classes", tmp_path / "mine.toml"]
    r = cli("train", "--data", data, "--out", tmp_path / "model", *args, cwd=fork)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    error = r.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and expected in error, r.stderr[-2000:]
    assert not (tmp_path / "model").exists()


def test_train_notebook_runs_top_to_bottom_on_any_folder(tmp_path):
    """train.ipynb, with its parameters cell set to another folder of classes (as papermill would set it)."""
    import json
    import os

    import nbformat
    from conftest import execute_notebook

    from bear_classifier.inference.predict import Classifier

    data = photos(tmp_path / "photos", {k: 10 for k in PATTERNS})
    nb = nbformat.read(ROOT / "train.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = (f"path, negatives, cleaning, valid_list = Path({str(data)!r}), None, None, None\n"
                     f"recipe, out = Recipe(epochs=1, size=64, bs=8), Path({str(tmp_path / 'model')!r})")
    nb = execute_notebook(nb, tmp_path, cell_timeout=600, deadline=900,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout's package
    card = json.loads((tmp_path / "model" / "export.json").read_text())
    assert card["classes"]["kinds"][0]["label"] == "checks" and card["validation"].startswith("20% of each class")
    assert card["gate"]["kind"].startswith("distance to the training classes")  # "none of these", as train fits it
    assert card["head_start"] == "linear probe"  # no ImageNet rows: step 6 starts the head from the photos
    shown = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "display_data"]
    assert sum("image/png" in o["data"] for o in shown) >= 3  # show_batch, the confusion matrix, the top losses
    clf = Classifier.load(tmp_path / "model" / "export.onnx")
    assert clf.classes.labels == ["checks", "dots", "stripes"]
    assert clf.predict(pattern("dots", np.random.default_rng(5))).label in clf.vocab

    # The command line, from the same recipe on the same photos, makes the same model card.
    cli = subprocess.run([sys.executable, "-m", "bear_classifier", "train", "--data", str(data), "--out",
                          str(tmp_path / "cli"), "--epochs", "1", "--size", "64", "--bs", "8"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert cli.returncode == 0, cli.stderr[-2000:]
    twin = json.loads((tmp_path / "cli" / "export.json").read_text())
    assert set(card) == set(twin) - {"train_seconds"}  # the notebook is not timed as one run
    for key in ["recipe", "classes", "validation", "head_start", "data", "auto_cleaned"]:
        assert card[key] == twin[key], key
    assert card["gate"]["kind"] == twin["gate"]["kind"] and card["temperature"] == pytest.approx(twin["temperature"], abs=0.05)
