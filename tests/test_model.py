"""The offline backbone really is ImageNet-pretrained, and the BearNet gate behaves as documented."""
import numpy as np
import pytest
import torch
from PIL import Image

from bear_classifier.model import (IMAGENET_TEDDY, IMAGENET_WILD_BEARS, BearNet, WeightsUnavailable,
                                   create_imagenet_model)


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
    head = torch.nn.Linear(1280, 3)
    classifier = imagenet_model.get_classifier()
    net = BearNet(torch.nn.Identity(), head, classifier, wild_threshold=0.05, teddy_threshold=0.02).eval()
    # Features that make the ImageNet head put all its mass on one class: a bear, a teddy, an espresso.
    def features_for(cls: int) -> torch.Tensor:
        return (classifier.weight[cls] * 50)[None]

    with torch.no_grad():
        for cls, is_bear in [(IMAGENET_WILD_BEARS[0], True), (IMAGENET_TEDDY[0], True), (967, False)]:
            logp = net.combine(features_for(cls))
            p = logp.exp()[0]
            assert torch.isclose(p.sum(), torch.tensor(1.0), atol=1e-5)
            assert (p[3] < 0.01) if is_bear else (p[3] > 0.99)


def test_body_stays_frozen_in_train_mode(imagenet_model):
    net = BearNet(torch.nn.BatchNorm2d(3), torch.nn.Linear(3, 3), torch.nn.Linear(3, 1000))
    net.train()
    assert not net.body.training and not net.imagenet.training and net.head.training
    before = net.body.module.running_mean.clone()
    net.features(torch.randn(4, 3, 8, 8) + 5)
    assert torch.equal(before, net.body.module.running_mean)
