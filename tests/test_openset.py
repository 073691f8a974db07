""""None of these" from the training photos alone: the distance gate on the real, untouched network's features.

The classes are three of scikit-image's sample photos (a cup of coffee, a cat, a rocket), each seen through
random crops, flips and lighting; the photos out of the set are subjects that are in no class.
"""
import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from bear_classifier.model.backbone import create_imagenet_model, split_imagenet_model
from bear_classifier.model.classifier import LOGIT_BOUND, pooled_views
from bear_classifier.model.openset import DistanceGate, fit_gate


def photos(img: np.ndarray, n: int, seed: int) -> list[Image.Image]:
    """`n` photos of one subject: random crops (half to all of each side), flips, lighting."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(img).convert("RGB")
    out = []
    for _ in range(n):
        w, h = (int(s * rng.uniform(0.5, 1.0)) for s in base.size)
        x, y = int(rng.integers(0, base.width - w + 1)), int(rng.integers(0, base.height - h + 1))
        crop = base.crop((x, y, x + w, y + h))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(ImageEnhance.Brightness(crop).enhance(rng.uniform(0.7, 1.3)))
    return out


@pytest.fixture(scope="module")
def views():
    """Pooled views (N, 5, C) of the untouched network for a list of photos, 224 px squished as in training."""
    trunk, tail, _ = split_imagenet_model(create_imagenet_model())
    net = torch.nn.Sequential(trunk, tail).eval()

    def embed(imgs: list[Image.Image]) -> torch.Tensor:
        x = torch.stack([torch.tensor(np.asarray(i.resize((224, 224), Image.BILINEAR)), dtype=torch.float32)
                         .permute(2, 0, 1) / 255 for i in imgs])
        with torch.inference_mode():
            return pooled_views(net((x - 0.5) / 0.5))

    return embed


@pytest.fixture(scope="module")
def classes(views):
    """(train views, train labels, validation views, fresh in-set views) of the three classes."""
    from skimage import data

    subjects = [data.coffee(), data.chelsea(), data.rocket()]
    train = [views(photos(img, 16, seed=k)) for k, img in enumerate(subjects)]
    valid = torch.cat([views(photos(img, 12, seed=10 + k)) for k, img in enumerate(subjects)])
    fresh = torch.cat([views(photos(img, 12, seed=20 + k)) for k, img in enumerate(subjects)])
    labels = torch.cat([torch.full((len(t),), k) for k, t in enumerate(train)])
    return torch.cat(train), labels, valid, fresh


def test_rejects_subjects_in_no_class(classes, views):
    from skimage import data

    gate = fit_gate(*classes[:3], keep=0.95)
    for unseen in (data.astronaut(), data.hubble_deep_field(), data.immunohistochemistry()):
        logits = gate(views(photos(unseen, 12, seed=30)))
        assert (logits < 0).all(), logits  # a person, a sky of galaxies, a tissue slide: none of these


def test_few_training_photos_still_measure_what_the_axes_leave_out(classes):
    """48 training photos, fewer than the gate's 128 axes: the spread outside the axes, learnt from the training
    photos, must be the spread new photos of the classes show there, not ~0 (which puts every photo ~1e7 away)."""
    train, labels, valid, _ = classes
    gate = fit_gate(train, labels, valid, keep=0.95)
    x = torch.nn.functional.normalize(valid[:, 0], dim=-1) - gate.mean
    left_out = (x - (x @ gate.components.T) @ gate.components).square().sum(-1).mean()
    per_axis = left_out / (x.shape[1] - gate.components.shape[0])
    assert 0.1 < float(gate.residual_var / per_axis) < 10, (float(gate.residual_var), float(per_axis))


def test_photos_that_all_look_the_same_get_a_message_not_a_gate_that_rejects_everything(classes):
    train, labels, valid, _ = classes
    with pytest.raises(ValueError, match="all look the same to the network"):
        fit_gate(train[:1].repeat(6, 1, 1), torch.tensor([0, 0, 0, 1, 1, 1]), valid)
    near_copies = train[:4].repeat(3, 1, 1)  # 12 photos, 4 different ones: as many axes as differences
    gate = fit_gate(near_copies, labels[:4].repeat(3), valid, keep=1.0)
    assert (gate(train[4:8]) > -LOGIT_BOUND).any()  # a photo like them but not one of them: not "~1e7 away"


def test_keeps_the_calibrated_share_of_in_set_photos(classes):
    train, labels, valid, fresh = classes
    for keep in (0.8, 0.95):
        gate = fit_gate(train, labels, valid, keep=keep)
        assert (gate(valid) >= 0).float().mean().item() == pytest.approx(keep, abs=1 / len(valid))
        assert (gate(fresh) >= 0).float().mean().item() >= keep - 0.15  # new photos of the same subjects


def test_the_gate_is_small_and_travels_in_a_state_dict(classes, tmp_path):
    gate = fit_gate(*classes[:3], keep=0.95)
    torch.save(gate.state_dict(), tmp_path / "gate.pt")
    assert (tmp_path / "gate.pt").stat().st_size < 2e6  # PCA keeps a 1280-feature network's gate under 2 MB
    state = torch.load(tmp_path / "gate.pt")
    copy = DistanceGate(*(state[k] for k in ("mean", "components", "centroids", "precision", "residual_var")))
    copy.load_state_dict(state)
    assert torch.equal(copy(classes[3]), gate(classes[3]))


def test_the_gate_exports_to_onnx_with_the_same_answers(classes, tmp_path):
    import onnxruntime as ort

    gate = fit_gate(*classes[:3], keep=0.95).eval()
    torch.onnx.export(gate, (classes[3][:2],), tmp_path / "gate.onnx", input_names=["views"],
                      output_names=["logit"], dynamic_axes={"views": {0: "n"}}, dynamo=False)
    session = ort.InferenceSession(str(tmp_path / "gate.onnx"))
    (got,) = session.run(None, {"views": classes[3].numpy()})
    np.testing.assert_allclose(got, gate(classes[3]).numpy(), rtol=1e-4, atol=1e-3)


def test_the_nearest_of_the_five_views_decides(classes, views):
    """A cup of coffee filling one corner of a photo of galaxies: read as a whole, the galaxies outweigh the cup;
    the gate reads the nearest of the photo's five views, the cup's corner."""
    from skimage import data

    gate = fit_gate(*classes[:3], keep=0.95)
    sky = Image.fromarray(data.hubble_deep_field()).convert("RGB").resize((448, 448))
    scenes = []
    for k, cup in enumerate(photos(data.coffee(), 8, seed=40)):
        scene = sky.copy()
        scene.paste(cup.resize((256, 256)), [(0, 0), (192, 0), (0, 192), (192, 192)][k % 4])  # 4/7 of each side
        scenes.append(scene)
    v = views(scenes)
    nearest, whole = gate.distance(v), gate.distance(v[:, :1])
    assert (nearest < whole).all() and (nearest < 0.95 * whole).float().mean() >= 0.5, (nearest, whole)
    assert (nearest < gate.distance(views([sky]))).all()


def test_far_photos_are_never_certainly_none_of_these(classes, views):
    from skimage import data

    from bear_classifier.model.classifier import answer_log_probs

    gate = fit_gate(*classes[:3], keep=0.95)
    logits = gate(views(photos(data.immunohistochemistry(), 4, seed=50)))
    p_none = answer_log_probs(torch.zeros(len(logits), 3), logits).exp()[:, -1]
    assert (logits < 0).all() and (p_none > 0.5).all() and (p_none < 0.9999).all(), p_none
