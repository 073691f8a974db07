"""The shipped model: real photos get the right label, bad files one human line, a tampered file is refused."""
import csv
import os
import subprocess
import sys

import numpy as np

from bear_classifier.inference.images import open_image
from conftest import BEARS, ROOT, need_shared
from corpus import PDF, encode, photo

CLI = [sys.executable, "-m", "bear_classifier", "predict"]


def run(*args, cwd=ROOT):
    return subprocess.run([*CLI, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


def valid_photos(per_class: int) -> list[tuple[str, str]]:
    need_shared()
    rows = list(csv.DictReader(open(ROOT / "data" / "valid.csv")))
    picked = []
    for label in ["black", "grizzly", "teddy"]:
        picked += [(r["file"], label) for r in rows if r["label"] == label][:per_class]
    return picked


def test_real_bear_photos_get_their_species(classifier):
    photos = valid_photos(per_class=8)
    for file, label in photos:
        pred = classifier.predict(open_image((BEARS / file).read_bytes()))
        assert pred.label == label, (file, pred)


def test_everyday_photos_are_not_bears(classifier):
    need_shared()
    negatives = sorted((BEARS.parent / "not_bear").glob("*.jpg"))[::170][:20]
    answers = [classifier.predict(open_image(p.read_bytes())).label for p in negatives]
    assert answers.count("not_bear") >= 19, list(zip(negatives, answers))


def test_prediction_is_a_probability_distribution(classifier):
    pred = classifier.predict(photo())
    assert list(pred.probs) == ["black", "grizzly", "teddy", "not_bear"]
    assert abs(sum(pred.probs.values()) - 1) < 1e-4
    assert pred.probability == max(pred.probs.values())
    assert str(pred).startswith(f"Prediction: {pred.label}; Probability: 0.")


def test_cli_prints_label_per_file_and_one_line_per_bad_file(tmp_path):
    good = tmp_path / "generated.jpg"
    good.write_bytes(encode(photo(), "JPEG"))
    bad = tmp_path / "report.pdf"
    bad.write_bytes(PDF)
    files = [good, bad, tmp_path / "missing.jpg"]
    if BEARS.is_dir():
        files.insert(0, BEARS / valid_photos(1)[1][0])  # a real grizzly
    r = run(*files)
    assert r.returncode == 1
    out = r.stdout.splitlines()
    assert len(out) == len(files) - 2
    assert all("Prediction: " in line and "Probability: " in line for line in out)
    if BEARS.is_dir():
        assert "Prediction: grizzly" in out[0]
    err = r.stderr.strip().splitlines()
    assert err == [f"{bad}: error: This file is a PDF document, not an image. Please upload a photo (JPEG, PNG, WebP, HEIC...).",
                   f"{tmp_path / 'missing.jpg'}: error: No such file or directory"]
    assert "Traceback" not in r.stderr


def test_cli_lines_come_in_the_order_of_the_files_when_both_streams_go_to_one_pipe(tmp_path):
    (tmp_path / "notes.txt").write_text("not a photo")
    files = [ROOT / "examples" / "grizzly.jpg", tmp_path / "notes.txt", ROOT / "examples" / "teddy-bear.jpg"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout to a pipe is block-buffered
    r = subprocess.run([*CLI, *map(str, files)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       env=env, timeout=300)  # `predict ... 2>&1 | less`
    assert [line.split(":")[0] for line in r.stdout.splitlines()] == [str(f) for f in files], r.stdout


def test_cli_piped_into_a_reader_that_stops_early_ends_quietly():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    photos = [str(ROOT / "examples" / name) for name in ["grizzly.jpg", "teddy-bear.jpg"] * 3]
    proc = subprocess.Popen([*CLI, *photos], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    first = proc.stdout.readline()  # `predict ... | head -1`
    proc.stdout.close()
    errors = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and first.startswith(photos[0]) and errors == ""


def test_cli_writes_heatmap_and_overlay_and_still_explains_bad_files(tmp_path):
    from PIL import Image

    photo_path = tmp_path / "wide.jpg"
    photo_path.write_bytes(encode(photo((400, 240)), "JPEG"))
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    r = run(photo_path, bad, "--heatmap", tmp_path / "maps")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"{bad}: error: This file is a text file, not an image. "
                                             "Please upload a photo (JPEG, PNG, WebP, HEIC...)."]
    heat = Image.open(tmp_path / "maps" / "wide.png")
    assert heat.mode == "L" and heat.size == (400, 240)  # the photo's own shape
    assert Image.open(tmp_path / "maps" / "wide_overlay.jpg").size == (400, 240)
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["wide.png", "wide_overlay.jpg"]


def test_heatmap_peaks_where_the_bear_is(classifier):
    """A bear pasted into one quadrant of an everyday scene: the brightest part of its heatmap is in that quadrant.

    The bears fill their photos; pasted at a quarter of the scene they are still answered as bears (a
    smaller bear in a busy scene can be turned away as "not a bear": then the map shows not-bear evidence).
    """
    from bear_classifier.inference.heatmap import heatmap_image
    from conftest import bears_in_corners

    for img, label, (x, y) in bears_in_corners(["glacier_42cac8cb17f0.jpg"], side=0.5):
        pred = classifier.predict(img)
        assert pred.label == label, (label, x, y, pred.label)
        heat = np.asarray(heatmap_image(pred.heatmap, img.size))
        row, col = np.unravel_index(heat.argmax(), heat.shape)
        assert (col >= 224, row >= 224) == (x == 224, y == 224), (label, x, y, row, col)


def test_a_little_wild_bear_in_one_corner_is_not_a_bear(classifier):
    """Everyday photos whose only bear evidence is a little wild-bear mass in one corner view: a black cat, a black
    dog, a forest and two glaciers of 100 px (docs/model.md). A corner needs twice the mass the whole photo does."""
    need_shared()
    for name in ["cat_f08dac0b1672.jpg", "dog_83f236bf1d53.jpg", "forest_589c6693108f.jpg", "glacier_37919f02ee38.jpg",
                 "glacier_6dd2073894c1.jpg"]:
        pred = classifier.predict(open_image((BEARS.parent / "not_bear" / name).read_bytes()))
        assert pred.label == "not_bear", (name, pred.label, pred.probability)


def test_cli_refuses_a_tampered_model(tmp_path):
    data = bytearray((ROOT / "export.onnx").read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / "export.onnx").write_bytes(bytes(data))
    (tmp_path / "export.json").write_text((ROOT / "export.json").read_text())
    r = run(tmp_path / "x.jpg", "--model", tmp_path / "export.onnx")
    assert r.returncode == 2
    assert "does not match its model card" in r.stderr and "Traceback" not in r.stderr


def test_served_model_matches_learn_predict_on_the_shipped_learner(classifier, tmp_path):
    import torch
    from PIL import Image

    from bear_classifier.model.learner import load_model

    learn = load_model()
    files = [BEARS / f for f, _ in valid_photos(2)] if BEARS.is_dir() else []
    for seed in range(2):
        path = tmp_path / f"{seed}.png"
        photo((500, 280), seed=seed).save(path)
        files.append(path)
    for path in files:
        fast = torch.from_numpy(classifier.probabilities(Image.open(path).convert("RGB")))
        label, idx, slow = learn.predict(path)
        assert torch.allclose(fast, slow, atol=1e-4), (path, fast, slow)
        # The served answer unpacks as fastai's does: pred, pred_idx, probs.
        pred, pred_idx, probs = classifier.predict(Image.open(path).convert("RGB"))
        assert (pred, pred_idx) == (label, int(idx)) and np.allclose(probs, slow.numpy(), atol=1e-4)
        # the gate's logit per view (the ONNX file's third output) is the gate: its largest gives p(a bear)
        views = classifier.run(Image.open(path).convert("RGB"))[2]
        assert views.shape == (5,) and abs(1 / (1 + np.exp(-views.max())) - (1 - fast[-1].item())) < 1e-5


def test_serving_imports_no_torch():
    # The app's kernel memory depends on it: ONNX Runtime runs the network; torch alone is 650 MiB.
    code = ("import sys; from bear_classifier.inference.predict import Classifier; Classifier.load(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'fastai', 'timm', 'torchvision'}))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_a_bear_beside_a_road_or_a_house_is_still_a_bear(classifier):
    """A bear filling a corner of a street or a building scene (40% of its side) gets its species: the
    gate reads the corners too (model.pooled_views). Read as a whole, such scenes outvote the bear."""
    from conftest import bears_in_corners

    answers = [(classifier.predict(img).label, label) for img, label, _ in bears_in_corners()]
    assert len(answers) == 48 and all(got == want for got, want in answers), answers


def test_the_examples_row_shows_each_bear_and_something_else_each_licensed_and_answered_right(classifier):
    """What the page offers a visitor with no photo at hand: a grizzly, a black bear, a teddy bear and a photo
    that is not a bear, each listed with its licence in examples/README.md, and each answered as what it shows."""
    from bear_classifier.page.examples import example_files

    files = example_files(ROOT / "examples")
    listed = (ROOT / "examples" / "README.md").read_text()
    shows = {"grizzly": "grizzly", "black-bear": "black", "teddy-bear": "teddy"}
    answers = {name: classifier.predict(open_image(path.read_bytes())).label for name, path in files.items()}
    for name in files:
        assert f"| {name} |" in listed, f"{name} has no licence line in examples/README.md"
    for stem, label in shows.items():
        assert answers[f"{stem}.jpg"] == label, answers
    assert any(label == "not_bear" for label in answers.values()), answers
