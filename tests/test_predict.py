"""The shipped model: real photos get the right label, bad files one human line, a tampered file is refused."""
import csv
import subprocess
import sys


from bear_classifier.images import open_image
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


def test_cli_refuses_a_tampered_model(tmp_path):
    data = bytearray((ROOT / "export.pt").read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / "export.pt").write_bytes(bytes(data))
    (tmp_path / "export.json").write_text((ROOT / "export.json").read_text())
    r = run(tmp_path / "x.jpg", "--model", tmp_path / "export.pt")
    assert r.returncode == 2
    assert "does not match its model card" in r.stderr and "Traceback" not in r.stderr


def test_served_model_matches_learn_predict_on_the_shipped_learner(classifier, tmp_path):
    import torch
    from PIL import Image

    from bear_classifier.predict import load_model

    learn = load_model()
    files = [BEARS / f for f, _ in valid_photos(2)] if BEARS.is_dir() else []
    for seed in range(2):
        path = tmp_path / f"{seed}.png"
        photo((500, 280), seed=seed).save(path)
        files.append(path)
    for path in files:
        fast = classifier.probabilities(Image.open(path).convert("RGB"))
        _, _, slow = learn.predict(path)
        assert torch.allclose(fast, slow, atol=1e-4), (path, fast, slow)


def test_serving_imports_neither_fastai_nor_torchvision():
    # The app's kernel memory depends on it: fastai and timm import torchvision, which imports torch's compiler stack.
    code = ("import sys; from bear_classifier.predict import Classifier; Classifier.load(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'fastai', 'timm', 'torchvision', 'sympy'}))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
