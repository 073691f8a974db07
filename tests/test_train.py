"""A tiny end-to-end run of the real pipeline on generated images: train, evaluate, export, load, predict."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from bear_classifier.classes import Classes
from bear_classifier.training.evaluate import evaluate
from bear_classifier.model.export import export
from bear_classifier.inference.predict import Classifier, ModelError
from bear_classifier.model.learner import load_model
from bear_classifier.training.recipe import Recipe
from bear_classifier.training.train import train_model
from conftest import ROOT


def tiny_bears() -> Classes:
    return Classes.from_file(ROOT / "classes.toml")


# The bear recipe with a gate that takes any photo for a bear: generated images are no bears to ImageNet.
TINY = Recipe.from_file(ROOT / "recipe.toml").but(size=64, bs=8, epochs=4, lr=1e-2, clean=False, imagenet_gate=(
    dict(rows=[294, 295, 296, 297], threshold=1e-6), dict(rows=[850], threshold=1e-6)))


@pytest.fixture(scope="module")
def trained(tiny_dataset, tiny_negatives, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    reports = out / "reports"  # evaluate creates it, as train.ipynb expects
    learn, card = train_model(tiny_dataset, TINY, tiny_bears(),
                              negatives=tiny_negatives)
    metrics = evaluate(learn, out=reports)
    card = export(learn, out / "export.pkl", dict(card, valid_metrics=metrics))
    return learn, card, out


def test_training_learns_the_classes(trained):
    learn, card, out = trained
    bears = card["valid_metrics"]["per_class"]
    assert min(bears[c] for c in ("black", "grizzly", "teddy")) >= 0.5, bears
    train, valid = card["data"]["train"], card["data"]["valid"]
    assert {c: train[c] + valid[c] for c in ("black", "grizzly", "teddy")} == {"black": 12, "grizzly": 12, "teddy": 12}
    assert train["not_bear"] > 0 and valid["not_bear"] > 0  # half the subjects each side
    for plot in ("confusion_matrix", "top_losses", "reliability"):
        assert (out / "reports" / f"{plot}.png").stat().st_size > 1000


def test_imagenet_head_still_knows_a_cat_and_an_espresso_after_fine_tuning(trained):
    """Learning without forgetting: the gate's ImageNet head still reads the fine-tuned network right."""
    from skimage import data

    from test_model import imagenet_tensor

    learn, _, _ = trained
    model = learn.model.cpu().eval()
    with torch.inference_mode():
        for arr, expected in [(data.chelsea(), range(281, 286)), (data.coffee(), [967])]:
            probs = model.imagenet(model.feature_map(imagenet_tensor(arr)).mean((2, 3))).softmax(-1)[0]
            assert probs.argmax().item() in expected and probs.max() > 0.3, (expected, probs.argmax().item())


def test_model_card_describes_the_export(trained):
    _, card, out = trained
    saved = json.loads((out / "export.json").read_text())
    assert Classes.from_dict(saved["classes"]).vocab == ["black", "grizzly", "teddy", "not_bear"]
    assert Classes.from_dict(saved["classes"]).name("grizzly") == "Grizzly bear"
    assert saved["gate"]["kind"] == "imagenet"  # bears keep ImageNet's rows alone (openset.fit_for_learner says why)
    assert saved["validation"].startswith("20% of each class")
    assert saved["arch"] == "tf_efficientnet_lite0"
    assert set(saved["versions"]) >= {"python", "torch", "torchvision", "fastai", "timm", "pillow"}
    import hashlib

    assert saved["sha256"] == hashlib.sha256((out / "export.pkl").read_bytes()).hexdigest()
    assert saved["serving"]["sha256"] == hashlib.sha256((out / "export.onnx").read_bytes()).hexdigest()


def test_export_load_round_trip_gives_the_same_probabilities(trained, tiny_dataset):
    learn, _, out = trained
    loaded = load_model(out / "export.pkl")
    files = sorted(tiny_dataset.rglob("*.jpg"))[:6]
    dl_a, dl_b = learn.dls.test_dl(files), loaded.dls.test_dl(files)
    a, _ = learn.get_preds(dl=dl_a)
    b, _ = loaded.get_preds(dl=dl_b)
    assert torch.allclose(a, b, atol=1e-6)


def test_served_model_matches_learn_predict(trained, tiny_dataset):
    _, _, out = trained
    clf, learn = Classifier.load(out / "export.onnx"), load_model(out / "export.pkl")
    assert clf.vocab == list(learn.dls.vocab) and clf.size == (64, 64)
    for path in sorted(tiny_dataset.rglob("*.jpg"))[::7]:
        fast = torch.from_numpy(clf.probabilities(Image.open(path)))
        _, _, slow = learn.predict(path)
        assert torch.allclose(fast, slow, atol=1e-4), (path, fast, slow)


@pytest.mark.parametrize("name, load", [("export.pkl", load_model), ("export.onnx", Classifier.load)])
def test_tampered_export_is_refused_before_loading(trained, tmp_path, name, load):
    _, _, out = trained
    data = bytearray((out / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / name).write_bytes(bytes(data))
    (tmp_path / "export.json").write_text((out / "export.json").read_text())
    with pytest.raises(ModelError, match=f"{name} does not match its model card"):
        load(tmp_path / name)


def test_missing_model_card_is_a_clear_error(tmp_path):
    (tmp_path / "export.pkl").write_bytes(b"x")
    with pytest.raises(ModelError, match="model card"):
        load_model(tmp_path / "export.pkl")


def test_image_classifier_cleaner_works_with_ipywidgets_8(trained, tiny_dataset, monkeypatch):
    import builtins

    from fastai.vision.widgets import ImageClassifierCleaner
    from IPython.display import display

    monkeypatch.setattr(builtins, "display", display, raising=False)  # a builtin inside Jupyter, as fastai assumes

    from bear_classifier.training.clean import cleaner_changes

    learn, _, _ = trained
    cleaner = ImageClassifierCleaner(learn)
    cleaner.dd_cats.value = "black"
    boxes = cleaner.iw.widget.children
    assert len(boxes) > 2  # thumbnails with dropdowns, highest loss first
    boxes[0].children[1].value = "<Delete>"
    boxes[1].children[1].value = "teddy"
    boxes[2].children[1].value = "not_bear"  # none of the classes: no training photo of any, so dropped
    changes = cleaner_changes(cleaner, tiny_dataset, "not_bear")
    first, second, third = (cleaner.fns[i].relative_to(tiny_dataset).as_posix() for i in (0, 1, 2))
    assert changes == {first: "", second: "teddy", third: ""}


def test_review_lists_the_highest_losses_as_html_and_csv(trained, tiny_dataset, tmp_path):
    import csv

    from bear_classifier.training.review import review

    _, _, out = trained
    csv_path, html_path = review(tiny_dataset, out / "export.pkl", tmp_path / "review", tmp_path / "cleaning.csv", top=5)
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == 5
    losses = [float(r["loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True)
    assert all(r["new_label"] == "" and (tiny_dataset / r["file"]).exists() for r in rows)
    assert html_path.read_text().count("<figure>") == 5


def test_learning_without_forgetting_pulls_a_drifted_network_back(tmp_path):
    """The forgetting guard at work: the tail is knocked off its ImageNet weights until a cat and an espresso
    are misnamed; fitting with LwF alone (not-bear photos carry no species loss) brings both names back."""
    from fastai.vision.all import set_seed
    from PIL import Image
    from skimage import data

    from bear_classifier.training.train import LearningWithoutForgetting, create_learner, split_dataloaders
    from test_model import imagenet_tensor

    photos = {"chelsea": data.chelsea(), "coffee": data.coffee(), "astronaut": data.astronaut(), "rocket": data.rocket()}
    items = []
    for name, arr in photos.items():
        for turn in range(3):
            Image.fromarray(arr).rotate(5 * turn).save(tmp_path / f"{name}_{turn}.jpg")
            items.append((tmp_path / f"{name}_{turn}.jpg", "not_bear"))

    def names(model) -> list[int]:
        with torch.inference_mode():
            return [model.imagenet(model.feature_map(imagenet_tensor(photos[k])).mean((2, 3))).argmax().item()
                    for k in ("chelsea", "coffee")]

    set_seed(0, reproducible=True)
    bears = Classes.from_file(ROOT / "classes.toml")
    learn = create_learner(split_dataloaders(items, items[:2], vocab=bears.vocab, bs=4, size=224), bears)
    guard = LearningWithoutForgetting(learn.model)  # its frozen copy: the original tail
    with torch.no_grad():
        for p in learn.model.tail.parameters():
            p.add_(torch.randn_like(p) * p.std() * 0.3)
    cat, espresso = names(learn.model.eval())
    assert cat not in range(281, 286) and espresso != 967  # forgotten
    learn.unfreeze()
    learn.fit(20, 1e-3, cbs=[guard])
    cat, espresso = names(learn.model.cpu().eval())
    assert cat in range(281, 286) and espresso == 967


def test_cross_validation_holds_out_whole_sources(tiny_dataset, tiny_negatives, tmp_path):
    import shutil

    from bear_classifier.training.crossval import cross_validate

    root = tmp_path / "bears"
    shutil.copytree(tiny_dataset, root)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    (root / "SOURCES.csv").write_text("file,label,source_repo\n" + "".join(
        f"{f},{f.split('/')[0]},user{int(Path(f).stem) % 3}/bears\n" for f in files))
    (tmp_path / "valid.csv").write_text("file,label\n" + "".join(f"{f},{f.split('/')[0]}\n" for f in files[::4]))
    result = cross_validate(root, None, tmp_path / "valid.csv", tiny_negatives, tmp_path / "reports", n_folds=3,
                            classes=tiny_bears(), recipe=TINY.but(epochs=1))
    held = [tuple(f["sources"]) for f in result["folds"]]
    assert sorted(s for h in held for s in h) == ["user0/bears", "user1/bears", "user2/bears"]  # each held out once
    assert sum(f["n_as_labelled"] for f in result["folds"]) == 36 and sum(f["n_hand_checked"] for f in result["folds"]) == 9
    assert 0 < result["temperature"] and 0 <= result["ece_before"] <= 1
    assert {"mean", "worst", "confusion_clean"} <= set(result)
    for name in ("cv.json", "cv_out_of_fold.pt", "reliability_cv_before.png", "reliability_cv_after.png"):
        assert (tmp_path / "reports" / name).stat().st_size > 0


def test_the_recipe_has_its_defaults_once_and_names_a_knob_it_lacks():
    import argparse

    from bear_classifier.__main__ import add_recipe
    from bear_classifier.cli.training import recipe_of

    parser = argparse.ArgumentParser()
    add_recipe(parser)
    assert recipe_of(parser.parse_args([])) == Recipe()
    assert recipe_of(parser.parse_args(["--epochs", "5"])) == Recipe(epochs=5)
    # The bear model's recipe file sets only what it fits; an option changes the file's value, the rest stay.
    bears = recipe_of(parser.parse_args(["--recipe", str(ROOT / "recipe.toml"), "--epochs", "5"]))
    assert (bears.epochs, bears.temperature, bears.lr) == (5, 0.92, Recipe().lr)
    assert [g.rows for g in bears.imagenet_gate] == [(294, 295, 296, 297), (850,)]
    with pytest.raises(ValueError, match="a recipe has no epoch; its knobs: arch, freeze_epochs, epochs"):
        Recipe().but(epoch=5)


def test_a_classes_file_holds_words_and_the_recipe_what_training_fits(tmp_path):
    """A fitted number in a classes file (where they used to be) is named, with where it goes now."""
    (tmp_path / "old.toml").write_text('temperature = 0.9\n[[class]]\nlabel = "black"\n')
    with pytest.raises(ValueError, match="temperature belongs in a recipe file"):
        Classes.from_file(tmp_path / "old.toml")
    (tmp_path / "typo.toml").write_text('[[imagenet_gate]]\nrows = [294]\nthreshold = 2\n')
    with pytest.raises(ValueError, match="typo.toml is not a recipe file .*a threshold in \\(0, 1\\]"):
        Recipe.from_file(tmp_path / "typo.toml")


def test_only_the_negatives_push_the_gate_and_only_where_a_negative_weight_asks():
    """The species loss never reaches the gate (a bear photo pushing p(bear) up taught the gate that forests are
    bears); `negative_weight` lets the negatives push it down, towards "none of these", and nothing else."""
    from bear_classifier.model.classifier import answer_log_probs
    from bear_classifier.training.train import SpeciesLoss

    targets = torch.tensor([0, 2, 3, 3])  # two bear photos (black, teddy), two negatives ("none" is the last class)
    class_logits = torch.tensor([[2.0, 0.5, 0.1], [0.1, 0.3, 1.5], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    for weight in (0.0, 1.0):
        gate = torch.tensor([1.0, -0.5, 0.5, -2.0], requires_grad=True)
        loss = SpeciesLoss(negative_weight=weight)(answer_log_probs(class_logits, gate), targets)
        loss.backward()
        bears, negatives = gate.grad[:2].abs().max(), gate.grad[2:]
        assert bears < 1e-6  # log p(bear) cancels out of the species loss (to rounding)
        assert (negatives.abs().max() < 1e-6) if weight == 0 else (negatives > 0.01).all()  # descent lowers p(bear)
    assert Recipe().negative_weight == 0.0  # off unless a recipe asks, and then for an ImageNet gate only
    with pytest.raises(ValueError, match="needs an imagenet_gate"):
        Recipe(negative_weight=1.0)
