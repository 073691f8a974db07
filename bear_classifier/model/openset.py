""""None of these": how far a photo's features lie from the training classes, for any classes.

The network's pooled features of each of the photo's five views (the whole photo and its four corners,
model.pooled_views), scaled to unit length, are projected on their main axes (PCA, fitted on the training
photos' whole views); the nearest view decides, so a subject filling a corner of a wider scene is not outvoted
by the scene (measured: bench/openset_study.py). The distance has two parts: the Mahalanobis distance to the nearest
class mean inside that subspace, with one covariance shared by the classes and shrunk by Ledoit and Wolf's
rule (scikit-learn), so a few hundred photos per class are enough; and what the subspace leaves out, scaled
by its mean on the training photos (probabilistic PCA). The second part matters most: a face or a street
projected on the bears' main axes can land near a bear, but most of it lies outside them (measured:
bench/openset_study.py). The threshold is the distance under which a chosen share of the validation photos
falls, so the decision needs nothing but the training and validation photos. The gate is a torch module
whose statistics are buffers, so it travels inside the network: `learn.predict`, export.pkl and the ONNX
file alike. A model whose classes have ImageNet rows (bears) keeps that gate instead: `fit_for_learner`
says why; both gates together are measured in the study (bench/openset_study.py).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

DIM = 128  # PCA components: 64, 128 and 256 did alike; 1280 features would make a 6.5 MB precision matrix
KEEP = 0.99  # share of the validation photos a gate on its own keeps
# The gate's logit at the validation photos' median distance: 10, bounded to 9 where answers are made
# (model.LOGIT_BOUND: p(in set) = 0.9999 there), so the gate cuts photos off beyond the threshold and leaves the
# class head's calibrated probability alone inside it (at 4, p = 0.98 there, the bears' ECE rose from 0.90% to
# 1.15%: bench/openset_study.py).
SHARPNESS = 10.0


class DistanceGate(nn.Module):
    """Logit of p(the photo shows one of the classes) from views (N, V, C): positive inside the threshold.

    logit = sharpness * (threshold - distance) / (threshold - median validation distance): 0 at the
    threshold, sharpness at a typical validation photo, so typical photos keep their class probability.
    """

    def __init__(self, mean: torch.Tensor, components: torch.Tensor, centroids: torch.Tensor, precision: torch.Tensor,
                 residual_var: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.float())  # (C,)
        self.register_buffer("components", components.float())  # (D, C)
        self.register_buffer("centroids", centroids.float())  # (K, D)
        self.register_buffer("precision", precision.float())  # (D, D)
        self.register_buffer("residual_var", residual_var.float())  # () per left-out dimension
        self.register_buffer("threshold", torch.tensor(float("inf")))
        self.register_buffer("scale", torch.tensor(1.0))
        self.sharpness = SHARPNESS  # kept with the module, so a saved network answers as it was calibrated

    def distance(self, views: torch.Tensor) -> torch.Tensor:
        """Distance (N,) to the nearest class, of the nearest of the photo's views (N, V, C): Mahalanobis inside
        the subspace, and the part of the features the subspace leaves out. The nearest view, so that a bear
        filling one corner of a street scene is as near as a photo of the bear alone."""
        x = nn.functional.normalize(views.float(), dim=-1) - self.mean
        z = x @ self.components.T
        left_out = (x - z @ self.components).square().sum(-1) / self.residual_var
        diff = z[:, :, None, :] - self.centroids
        d2 = torch.einsum("nvkd,de,nvke->nvk", diff, self.precision, diff).amin(-1)
        return (d2 + left_out).clamp_min(0).sqrt().amin(1)

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return self.sharpness * (self.threshold - self.distance(views)) / self.scale

    def calibrate(self, views: torch.Tensor, keep: float = KEEP) -> "DistanceGate":
        """Set the threshold so that `keep` of these (validation) photos are kept."""
        with torch.no_grad():
            d = self.distance(views)
            self.threshold.fill_(float(torch.quantile(d, keep)))
            self.scale.fill_(max(float(self.threshold - d.median()), 1e-6))
        self.keep = keep
        return self

    def card(self) -> dict:
        return dict(kind="distance to the training classes (openset.py)", dims=self.components.shape[0],
                    classes=self.centroids.shape[0], keep=getattr(self, "keep", None),
                    threshold=round(float(self.threshold), 4))


def fit_distance_gate(features: torch.Tensor, labels: torch.Tensor, dim: int = DIM) -> DistanceGate:
    """A DistanceGate fitted on training features (N, C) of the whole photos and their class indices (N,).

    Uncalibrated (it keeps everything) until `calibrate` sees the validation photos.
    """
    from sklearn.covariance import LedoitWolf
    from sklearn.decomposition import PCA

    x, y = nn.functional.normalize(features.float(), dim=1).numpy(), labels.numpy()
    spread = float(x.var(0).mean())  # per feature
    if len(x) < 2 or spread < 1e-9:  # (real photos: ~5e-4)
        raise ValueError(f"The {len(x)} training photos all look the same to the network, and \"none of these\" is "
                         "learned from how the photos of each class differ: add more photos of each class.")
    # At most half as many axes as photos: with as many axes as photos the subspace holds every training photo
    # exactly, what it leaves out measures ~1e-16, and any new photo lands ~1e7 away (a fork with 30 photos a
    # class). Without the cap, as many photos as axes rejected no fewer other subjects; with it, the figures are
    # bench/openset_study.py's table (f): 10 photos a class keep 90% and reject 95%.
    pca = PCA(n_components=min(dim, len(x) // 2, x.shape[1]), random_state=0).fit(x)
    z = pca.transform(x)
    residual_var = ((x - pca.inverse_transform(z)) ** 2).sum(1).mean() / max(x.shape[1] - pca.n_components_, 1)
    # Real photos leave out 15-30% of the mean spread per feature; near-copies of a few photos leave out nothing.
    residual_var = max(residual_var, 0.01 * spread)
    classes = np.unique(y)
    centroids = np.stack([z[y == k].mean(0) for k in classes])
    residuals = z - centroids[np.searchsorted(classes, y)]
    precision = LedoitWolf().fit(residuals).precision_
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
    return DistanceGate(t(pca.mean_), t(pca.components_), t(centroids), t(precision), t(residual_var))


def fit_gate(train_views: torch.Tensor, train_labels: torch.Tensor, valid_views: torch.Tensor,
             keep: float = KEEP, dim: int = DIM) -> DistanceGate:
    """The "none of these" gate from the training photos' pooled views (N, V, C) and labels, calibrated on the
    validation photos' views to keep `keep` of them."""
    return fit_distance_gate(train_views[:, 0], train_labels, dim).calibrate(valid_views, keep)


def fit_for_learner(learn, train: list, valid: list, keep: float | None = None, bs: int = 64) -> nn.Module:
    """The gate of a fine-tuned learner, from its (path, label) training and validation photos of the classes
    (not the negatives): one pass of the network over each, without augmentation. A DistanceGate keeping KEEP
    of the validation photos, where the network has no gate of its own.

    A network that already has one (bears: the ImageNetGate, from classes.toml's ImageNet rows) keeps it alone:
    adding the distance gate turned a few more everyday photos away but lost bears filling a corner of a street
    or a building scene, which the ImageNet gate alone names (docs/model.md has the figures).
    """
    from .classifier import NoGate, view_features

    if not isinstance(learn.model.gate, NoGate):
        return learn.model.gate
    vocab = list(learn.dls.vocab)
    valid = valid or train  # a folder too small for a validation split: calibrate on the training photos
    train_views, _ = view_features(learn, learn.dls.test_dl([p for p, _ in train], bs=bs))
    valid_views, _ = view_features(learn, learn.dls.test_dl([p for p, _ in valid], bs=bs))
    labels = torch.tensor([vocab.index(y) for _, y in train])
    return fit_gate(train_views, labels, valid_views, keep or KEEP)
