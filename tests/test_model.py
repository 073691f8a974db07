"""The offline backbone really is ImageNet-pretrained, and the network's gates behave as documented."""
import numpy as np
import pytest
import torch
from PIL import Image

from bear_classifier.classes import Classes
from bear_classifier.model.backbone import WeightsUnavailable, create_imagenet_model, split_imagenet_model
from bear_classifier.model.classifier import GatedNet, ImageNetGate, NoGate, class_head, gate_for, pooled_views
from bear_classifier.training.recipe import Recipe
from conftest import ROOT

BEARS = Classes.from_file(ROOT / "classes.toml")
RECIPE = Recipe.from_file(ROOT / "recipe.toml")  # the bear model's: its ImageNet gate
WILD_BEAR, TEDDY = 294, 850  # brown bear, teddy: ImageNet rows the bear classes file's gate reads


def bear_net(trunk, tail, imagenet) -> GatedNet:
    """A network for the bear classes, as create_learner makes it: class head from ImageNet's rows, ImageNet gate."""
    net = GatedNet(trunk, tail, class_head(imagenet, [k.imagenet for k in BEARS.kinds]), imagenet)
    net.gate = gate_for(BEARS, net.imagenet, RECIPE.imagenet_gate, RECIPE.gate_sharpness)
    return net


def imagenet_tensor(arr: np.ndarray) -> torch.Tensor:
    img = Image.fromarray(arr).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.tensor(np.asarray(img), dtype=torch.float32).permute(2, 0, 1) / 255
    return ((x - 0.5) / 0.5)[None]  # tf_efficientnet_lite0 normalises with mean = std = 0.5


@pytest.fixture(scope="module")
def imagenet_model():
    return create_imagenet_model().eval()


def test_offline_backbone_names_shipped_images(imagenet_model):
    from skimage import data

    with torch.inference_mode():
        cat = imagenet_model(imagenet_tensor(data.chelsea())).softmax(-1)[0]
        coffee = imagenet_model(imagenet_tensor(data.coffee())).softmax(-1)[0]
    assert cat.argmax().item() in range(281, 286)  # the domestic cat classes (tabby ... Egyptian cat)
    assert coffee.argmax().item() == 967  # espresso
    assert cat.max() > 0.5 and coffee.max() > 0.5


def test_random_weights_would_fail_that_check():
    import timm

    torch.manual_seed(0)  # a fixed random network: some unseeded draws happen to be confident
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    from skimage import data

    with torch.inference_mode():
        p = model(imagenet_tensor(data.coffee())).softmax(-1)[0]
    assert p.max() < 0.1


def test_course_arch_without_internet_says_how_to_proceed(monkeypatch):
    import torchvision.models._api as tv_api

    def offline(*args, **kwargs):  # as on a machine without internet, even with a warm cache elsewhere
        raise OSError("network is unreachable")

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailable, match="--arch tf_efficientnet_lite0"):
        create_imagenet_model("resnet18")


def test_gate_turns_imagenet_bear_mass_into_not_bear_probability(imagenet_model):
    classifier = imagenet_model.get_classifier()
    net = bear_net(torch.nn.Identity(), torch.nn.Identity(), classifier).eval()
    assert isinstance(net.gate, ImageNetGate) and net.gate.imagenet is net.imagenet  # reads the network's own head
    # Views (N, V, C) that make the ImageNet head put all its mass on one class: a bear, a teddy, an espresso.
    def views_for(cls: int) -> torch.Tensor:
        return (classifier.weight[cls] * 50)[None, None]

    with torch.no_grad():
        for cls, is_bear in [(WILD_BEAR, True), (TEDDY, True), (967, False)]:
            logp = net.combine(views_for(cls))
            p = logp.exp()[0]
            assert torch.isclose(p.sum(), torch.tensor(1.0), atol=1e-5)
            assert (p[3] < 0.01) if is_bear else (p[3] > 0.99)


def test_class_head_starts_from_imagenet_knowledge(imagenet_model):
    """Before any training, the class head answers what ImageNet's brown bear / black bear / teddy rows say."""
    classifier = imagenet_model.get_classifier()
    head = class_head(classifier, [k.imagenet for k in BEARS.kinds]).eval()
    features = (classifier.weight[295] * 50)[None]  # features ImageNet reads as an American black bear
    assert BEARS.labels[head(features).argmax().item()] == "black"


def test_classes_without_imagenet_rows_get_a_fresh_head_and_no_gate(imagenet_model):
    """Classes ImageNet doesn't name (folder names alone): the head starts from nn.Linear's own initialisation,
    and the network, not knowing yet what is none of them, answers one of the classes for everything."""
    classifier = imagenet_model.get_classifier()
    monkeys = Classes.from_dict({"class": [{"label": "howler"}, {"label": "proboscis"}, {"label": "snub_nosed"}]})
    head = class_head(classifier, [k.imagenet for k in monkeys.kinds])
    assert head[-1].weight.shape == (3, classifier.in_features)
    assert not any(torch.allclose(row, classifier.weight[i]) for row in head[-1].weight for i in (294, 295, 850))
    net = GatedNet(torch.nn.Identity(), torch.nn.Identity(), head, classifier)
    net.gate = gate_for(monkeys, net.imagenet)
    assert isinstance(net.gate, NoGate)
    with torch.no_grad():
        p = net.eval().combine((classifier.weight[967] * 50)[None, None]).exp()[0]  # an espresso
    assert p.shape == (4,) and p[3] < 2e-4 and p.argmax() < 3 and torch.isclose(p.sum(), torch.tensor(1.0), atol=1e-5)


def test_trunk_and_batchnorm_statistics_stay_frozen_in_train_mode():
    trunk, tail = torch.nn.BatchNorm2d(3), torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3))
    net = GatedNet(trunk, tail, torch.nn.Sequential(torch.nn.Linear(3, 3)), torch.nn.Linear(3, 1000)).train()
    assert not net.trunk.training and not net.imagenet.training and net.head.training
    assert net.tail[0].training and not net.tail[1].training  # convolutions learn; BatchNorm keeps ImageNet's statistics
    before = (trunk.running_mean.clone(), tail[1].running_mean.clone())
    net.feature_map(torch.randn(4, 3, 8, 8) + 5)
    assert torch.equal(before[0], trunk.running_mean) and torch.equal(before[1], tail[1].running_mean)
    assert not any(p.requires_grad for p in net.trunk.parameters())


def test_class_maps_average_to_the_species_logits(imagenet_model):
    """The heatmap is honest: averaged over the picture, each class map is that class's logit (minus the bias)."""
    trunk, tail, classifier = split_imagenet_model(imagenet_model)
    net = bear_net(trunk, tail, classifier).eval()
    with torch.no_grad():
        fmap = net.feature_map(torch.randn(2, 3, 224, 224))
        maps = net.class_maps(fmap)
        logits = net.class_logits(fmap.mean((2, 3)))
    assert maps.shape == (2, 4, 7, 7)
    assert torch.allclose(maps[:, :3].mean((2, 3)) + net.head[-1].bias, logits, atol=1e-4)


def test_pooled_views_are_the_whole_picture_then_its_four_corners():
    fmap = torch.zeros(1, 2, 7, 7)
    fmap[0, 0, 5, 6] = 16.0  # something in the bottom-right corner only
    views = pooled_views(fmap)
    assert views.shape == (1, 5, 2)
    assert torch.allclose(views[0, :, 0], torch.tensor([16 / 49, 0, 0, 0, 1.0]))  # 4×4 corner windows of 7×7


def test_corner_views_find_bears_the_whole_picture_misses(imagenet_model):
    """The untouched ImageNet network, on bears in a corner of a street or building scene: read as a
    whole, many scenes outvote their bear; the gate on the five views finds every one."""
    from conftest import bears_in_corners

    trunk, tail, classifier = split_imagenet_model(imagenet_model)
    net = bear_net(trunk, tail, classifier).eval()
    whole = views = 0
    with torch.inference_mode():
        for img, _, _ in bears_in_corners():
            v = pooled_views(net.feature_map(imagenet_tensor(np.asarray(img))))
            whole += int(net.gate(v[:, :1]) > 0)
            views += int(net.gate(v) > 0)
    assert whole < views == 48, (whole, views)  # 41 of 48 as a whole
