""""None of these": which out-of-set decision, measured per method on subjects held out, from cached features.

Two set-ups, each scored on the network the shipped bear model fine-tuned ("tuned") and on the untouched
ImageNet network ("untouched"), from bench/openset_features.py's cache:
  (a) own classes: three pool subjects the project never used as classes are the classes (80/20 seeded
      split); out of set: every other subject, the bears, and the people (bench/people.py). The head is a
      logistic regression on the untouched features, which is what fine-tuning starts from.
  (b) bears: the shipped model's training bears and its hand-checked validation photos (data/valid.csv);
      out of set: the everyday photos of the not-bear subjects it never trained on (data.negatives_split),
      the bear-like animals (foxes, wolves, monkeys...: the false bears found elsewhere), the people.
  (c) the hard held-out part; (d) calibration; (e) the shipped bear model beside the untouched network's own rule.
Every method is calibrated to keep KEEP of the validation photos, except the ImageNet gate (its thresholds).
Usage: python -m bench.openset_study [--keep 0.99]   (about a minute once the features are cached)
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn


from bench import ROOT
from bear_classifier.training.data import negatives_split, read_labels, subject
from bear_classifier.model.classifier import ImageNetGate
from bear_classifier.model.openset import fit_gate
from bench.openset_features import BEAR_LIKE, BEARS, DATA, RESULTS, kinds_of, load

OWN_TRIPLES = [("forest", "mountain", "glacier"), ("dog", "cat", "car"), ("bird", "sea", "buildings")]


class BothGates(nn.Module):
    """A photo is in the set only if every gate says so: the smallest of their logits."""

    def __init__(self, *gates: nn.Module):
        super().__init__()
        self.gates = nn.ModuleList(gates)

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return torch.stack([g(views) for g in self.gates]).amin(0)

    def card(self) -> dict:
        return dict(kind="all of", gates=[g.card() if hasattr(g, "card") else type(g).__name__ for g in self.gates])

def keep_threshold(valid_scores: np.ndarray, keep: float) -> float:
    """The score above which `keep` of the validation photos lie (higher score = more in-set)."""
    return float(np.quantile(valid_scores, 1 - keep))


def softmax_head(train_x, train_y) -> Callable:
    """A logistic regression on the whole photo's features: probabilities (N, K)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=0.5, max_iter=3000).fit(train_x[:, 0].float().numpy(), train_y.numpy())
    return lambda x: clf.predict_proba(x[:, 0].float().numpy())


def knn_scorer(train_x, k: int = 10) -> Callable:
    """Minus the mean cosine distance to the k nearest training photos (whole-photo features)."""
    from sklearn.neighbors import NearestNeighbors

    unit = lambda x: torch.nn.functional.normalize(x[:, 0].float(), dim=1).numpy()  # noqa: E731
    nn_ = NearestNeighbors(n_neighbors=k, metric="cosine").fit(unit(train_x))
    return lambda x: -nn_.kneighbors(unit(x))[0].mean(1)


def pca_only_scorer(train_x, train_y, dim: int = 128) -> Callable:
    """Mahalanobis to the nearest class inside the PCA subspace alone, on raw features: the first try, kept for
    the record (what lies outside the bears' main axes is where faces and streets differ from bears)."""
    from sklearn.covariance import LedoitWolf
    from sklearn.decomposition import PCA

    x, y = train_x[:, 0].float().numpy(), train_y.numpy()
    pca = PCA(dim, random_state=0).fit(x)
    z = pca.transform(x)
    mu = np.stack([z[y == k].mean(0) for k in np.unique(y)])
    prec = LedoitWolf().fit(z - mu[np.searchsorted(np.unique(y), y)]).precision_

    def score(v):
        d = pca.transform(v[:, 0].float().numpy())[:, None] - mu[None]
        return -np.einsum("nkd,de,nke->nk", d, prec, d).min(1)
    return score


def methods(train_x, train_y, valid_x, keep: float, probs: Callable, imagenet: Callable | None) -> dict:
    """{method: accept(x) -> bool array}, each calibrated on valid_x to keep `keep` (the ImageNet gate as shipped)."""
    msp = lambda x: probs(x).max(1)  # noqa: E731
    msp_thr = keep_threshold(msp(valid_x), keep)
    knn = knn_scorer(train_x)
    knn_thr = keep_threshold(knn(valid_x), keep)
    pca_only = pca_only_scorer(train_x, train_y)
    pca_only_thr = keep_threshold(pca_only(valid_x), keep)
    gate = fit_gate(train_x, train_y, valid_x, keep)  # the nearest of the five views (openset.py)
    whole = fit_gate(train_x[:, :1], train_y, valid_x[:, :1], keep)  # the whole photo alone
    maha = lambda x: (gate(x) >= 0).numpy()  # noqa: E731
    maha_whole = lambda x: (whole(x[:, :1]) >= 0).numpy()  # noqa: E731
    out = {"max softmax": lambda x: msp(x) >= msp_thr,
           "kNN cosine (k=10, all training photos)": lambda x: knn(x) >= knn_thr,
           "Mahalanobis in PCA 128 only": lambda x: pca_only(x) >= pca_only_thr,
           "Mahalanobis + left-out part, whole photo": maha_whole,
           "Mahalanobis + left-out part, nearest of 5 views (openset.py)": maha,
           "Mahalanobis & max softmax": lambda x: maha(x) & (msp(x) >= msp_thr)}
    if imagenet is not None:
        out["ImageNet gate (as shipped)"] = imagenet
        out["Mahalanobis whole photo & ImageNet gate"] = lambda x: maha_whole(x) & imagenet(x)
        out["Mahalanobis 5 views & ImageNet gate"] = lambda x: maha(x) & imagenet(x)
    return out


def score(name: str, accept: Callable, probs: Callable, valid_x, valid_y, out_sets: dict) -> dict:
    kept = accept(valid_x)
    right = kept & (probs(valid_x).argmax(1) == valid_y.numpy())
    row = dict(method=name, kept=kept.mean(), right=right.mean())
    row.update({f"rejected {k}": 1 - accept(x).mean() for k, x in out_sets.items()})
    return row


def people_sets(feats: dict, kind: str) -> dict:
    """The photos of people, and LFW's 25 px gray faces apart (bench/people.py says why)."""
    lfw = torch.tensor([f.startswith("lfw_") for f in feats["people"]["files"]])
    return {"people": feats["people"][kind][~lfw], "LFW 25 px faces": feats["people"][kind][lfw]}


def shipped_logits() -> tuple[Callable, ImageNetGate]:
    """(class logits / T, ImageNet gate) of the shipped bear model on pooled views (see `shipped`)."""
    s = torch.load(RESULTS / "shipped_heads.pt")
    head, imagenet = torch.nn.Linear(1280, 3), torch.nn.Linear(1280, 1000)
    head.load_state_dict(s["head"])
    imagenet.load_state_dict(s["imagenet"])
    gate = ImageNetGate(imagenet, s["groups"], s["sharpness"], s.get("corners", ()))
    return lambda v: head(v[:, 0].float()) / s["temperature"], gate


def shipped() -> tuple[Callable, Callable]:
    """(class probabilities, ImageNet gate's accept) of the shipped bear model on pooled views, from its heads as
    cached by the features step (its export.pkl predates model.GatedNet)."""
    logits, gate = shipped_logits()
    return (lambda v: logits(v).softmax(1).detach().numpy(), lambda v: (gate(v.float()) >= 0).numpy())


def own_classes(feats: dict, triple: tuple[str, ...], keep: float, seed: int = 0) -> list[dict]:
    """Set-up (a) on the untouched network's features."""
    neg = feats["not_bear"]
    subj = np.array([subject(Path(f)) for f in neg["files"]])
    x = neg["untouched"]
    inside = np.isin(subj, triple)
    y = torch.tensor([triple.index(s) for s in subj[inside]])
    rng = np.random.default_rng(seed)
    is_valid = rng.random(int(inside.sum())) < 0.2
    xin = x[torch.from_numpy(inside)]
    tx, ty, vx, vy = xin[~is_valid], y[~is_valid], xin[is_valid], y[is_valid]
    probs = softmax_head(tx, ty)
    kinds = kinds_of(list(triple))  # a basset is a dog: kept and named "dog" is right, so it is no other subject
    names = np.array([Path(f).name for f in neg["files"]])
    is_kind = np.isin(names, list(kinds))
    kx, ky = x[torch.from_numpy(is_kind)], np.array([triple.index(kinds[n]) for n in names[is_kind]])
    out_sets = {"other subjects": x[torch.from_numpy(~inside & ~is_kind)], "bears": feats["bears"]["untouched"],
                **people_sets(feats, "untouched")}
    rows = []
    for name, accept in methods(tx, ty, vx, keep, probs, None).items():
        kinds_right = (accept(kx) & (probs(kx).argmax(1) == ky)).mean() if len(ky) else float("nan")
        rows.append(dict(score(name, accept, probs, vx, vy, out_sets), n_valid=len(vy),
                         **{f"kinds of the classes ({len(ky)}) right": kinds_right}))
    return rows


def few_photos(feats: dict, triple: tuple[str, ...], keep: float) -> list[dict]:
    """The distance gate of a fork with few photos a class (untouched network): n a class to train on, a quarter
    as many to calibrate on; kept = fresh photos of the classes, rejected = 800 photos of other subjects (not kinds of the
    classes: KINDS). Three
    seeds each. The gate keeps at most half as many axes as training photos (openset.fit_distance_gate)."""
    from bear_classifier.model.openset import fit_distance_gate

    neg = feats["not_bear"]
    subj, x = np.array([subject(Path(f)) for f in neg["files"]]), neg["untouched"].float()
    kinds, names, rows = kinds_of(list(triple)), np.array([Path(f).name for f in neg["files"]]), []
    for n in (10, 20, 40, 100):
        kept, rejected, axes = [], [], 0
        for seed in range(3):
            rng = np.random.default_rng(seed)
            order = [rng.permutation(np.flatnonzero(subj == s)) for s in triple]
            train = np.concatenate([o[:n] for o in order])
            valid = np.concatenate([o[n:n + max(n // 4, 5)] for o in order])
            fresh = np.concatenate([o[n + max(n // 4, 5):][:100] for o in order])
            others = rng.choice(np.flatnonzero(~np.isin(subj, triple) & ~np.isin(names, list(kinds))), 800,
                                replace=False)
            labels = torch.arange(len(triple)).repeat_interleave(n)
            gate = fit_distance_gate(x[train][:, 0], labels).calibrate(x[valid], keep)
            with torch.no_grad():
                kept.append(float((gate(x[fresh]) > 0).float().mean()))
                rejected.append(float((gate(x[others]) <= 0).float().mean()))
            axes = gate.components.shape[0]
        rows.append({"photos a class": n, "axes": axes, "kept, fresh photos of the classes": float(np.mean(kept)),
                     "rejected, other subjects": float(np.mean(rejected))})
    return rows


def bear_split(feats: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training mask, validation mask and class index of the bear photos, as the shipped model was trained."""
    card = json.loads((ROOT / "export.json").read_text())
    dropped = {line.split(":")[0] for line in card["auto_cleaned"]}
    relabel = read_labels(ROOT / "data" / "cleaning.csv")
    valid = read_labels(ROOT / "data" / "valid.csv")
    labels = [valid.get(f[6:], relabel.get(f[6:], Path(f).parent.name)) for f in feats["bears"]["files"]]
    y = np.array([BEARS.index(lab) if lab in BEARS else -1 for lab in labels])
    is_valid = np.array([f[6:] in valid for f in feats["bears"]["files"]])
    is_train = ~is_valid & (y >= 0) & np.array([f[6:] not in dropped for f in feats["bears"]["files"]])
    return is_train, is_valid, y


def negative_masks(feats: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(held-out subjects, bear-like subjects): masks over the not-bear photos (data.negatives_split, BEAR_LIKE)."""
    files = [DATA / f for f in feats["not_bear"]["files"]]
    held = set(negatives_split(files)[1])
    return torch.tensor([f in held for f in files]), torch.tensor([subject(f) in BEAR_LIKE for f in files])


def hard_checked(feats: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows of the bear features, class indices) of the hard part's hand-checked bears (bench/hard_holdout.py)."""
    from bench.hard_holdout import split

    index = {f: i for i, f in enumerate(feats["bears"]["files"])}
    checked = set(read_labels(ROOT / "data" / "valid.csv"))
    hard = [(index[p.relative_to(DATA).as_posix()], BEARS.index(lab)) for p, lab in split()[2]
            if p.relative_to(DATA / "bears").as_posix() in checked]
    return torch.tensor([i for i, _ in hard]), torch.tensor([c for _, c in hard])


def corner_bears() -> torch.Tensor:
    """Pooled views (48, 5, C), through the shipped network, of tests/conftest.py's bears filling a corner of a
    street or a building scene (tests/test_predict.py): in-set photos whose whole view is the scene."""
    from fastai.vision.all import PILImage

    from bear_classifier.model.classifier import view_features
    from bear_classifier.model.learner import load_model

    from conftest import bears_in_corners

    learn = load_model(ROOT / "export.pkl")
    imgs = [PILImage.create(np.asarray(img)) for img, _, _ in bears_in_corners()]
    return view_features(learn, learn.dls.test_dl(imgs, bs=16))[0]


def bears(feats: dict, keep: float) -> list[dict]:
    """Set-up (b), on both networks: the shipped species head / a logistic regression, the ImageNet gate."""
    head_probs, imagenet = shipped()
    is_train, is_valid, y = bear_split(feats)
    held_mask, like = negative_masks(feats)
    rows, corners = [], corner_bears()
    for kind in ("tuned", "untouched"):
        x = feats["bears"][kind]
        tx, ty = x[torch.from_numpy(is_train)], torch.from_numpy(y[is_train])
        vx, vy = x[torch.from_numpy(is_valid)], torch.from_numpy(y[is_valid])
        if kind == "tuned":
            probs = head_probs
        else:
            probs = softmax_head(tx, ty)
        neg = feats["not_bear"][kind]
        out_sets = {"everyday (held-out subjects)": neg[held_mask & ~like], "bear-like animals": neg[like],
                    **people_sets(feats, kind)}
        if kind == "tuned":  # an in-set photo: "rejected" should be 0
            out_sets["bears in a corner of a street (48)"] = corners
        with torch.no_grad():
            for name, accept in methods(tx, ty, vx, keep, probs, imagenet).items():
                rows.append(dict(score(name, accept, probs, vx, vy, out_sets), features=kind, n_valid=len(vy)))
    return rows


def hard_part(feats: dict, keep: float) -> list[dict]:
    """The bear decision on bench/hard_holdout.py's hard part, fitted without it: the untouched network (which
    never saw any of it) with a logistic-regression head, and the shipped one (which trained on the hard sources:
    optimistic for them, as the grouped folds in export.json are not)."""
    from bench.hard_holdout import split

    head_probs, imagenet = shipped()
    index = {f: i for i, f in enumerate(feats["bears"]["files"])}
    pick = lambda items: (torch.tensor([index[p.relative_to(DATA).as_posix()] for p, _ in items]),  # noqa: E731
                          torch.tensor([BEARS.index(y) for _, y in items]))
    train, valid, held = split()
    like = negative_masks(feats)[1]
    (ci, cy), (hi, hy) = hard_checked(feats), pick(held)
    rows = []
    for kind in ("untouched", "tuned"):
        x = feats["bears"][kind]
        (ti, ty), (vi, _) = pick(train), pick(valid)
        if kind == "tuned":
            probs = head_probs
        else:
            probs = softmax_head(x[ti], ty)
        with torch.no_grad():
            for name, accept in methods(x[ti], ty, x[vi], keep, probs, imagenet).items():
                if not name.startswith(("ImageNet", "Mahalanobis + left-out", "Mahalanobis &", "Mahalanobis whole", "Mahalanobis 5")):
                    continue
                row = dict(features=kind, method=name)
                for label, idx, y in (("hard hand-checked", ci, cy), ("hard as labelled", hi, hy)):
                    right = accept(x[idx]) & (probs(x[idx]).argmax(1) == y.numpy())
                    row[f"right, {label} ({len(y)})"] = right.mean()
                row["rejected bear-like"] = 1 - accept(feats["not_bear"][kind][like]).mean()
                row.update({f"rejected {k}": 1 - accept(v).mean() for k, v in people_sets(feats, kind).items()})
                rows.append(row)
    return rows


def calibration(feats: dict) -> list[dict]:
    """ECE of the shipped model's shown probability (its four answers) with its ImageNet gate alone, and with the
    distance gate beside it (keep: every validation photo), on the hand-checked bears plus the everyday photos
    of held-out subjects (as `evaluate` scores), and on the hard part's hand-checked bears."""
    from bear_classifier.model.calibrate import expected_calibration_error
    from bear_classifier.model.classifier import answer_log_probs

    logits, imagenet = shipped_logits()
    x, neg = feats["bears"]["tuned"], feats["not_bear"]["tuned"]
    is_train, is_valid, y = bear_split(feats)
    everyday = neg[negative_masks(feats)[0]]  # bear-like subjects included, as `evaluate` scores
    hard_rows, hard_y = hard_checked(feats)
    valid_y = torch.from_numpy(y[is_valid])
    sets = {"hand-checked bears + everyday photos": (torch.cat([x[torch.from_numpy(is_valid)], everyday]),
                                                     torch.cat([valid_y, torch.full((len(everyday),), 3)])),
            "hard part's hand-checked bears": (x[hard_rows], hard_y)}
    train_mask, valid_mask = torch.from_numpy(is_train), torch.from_numpy(is_valid)
    distance = fit_gate(x[train_mask], torch.from_numpy(y[is_train]), x[valid_mask], 1.0)
    shipped_sharpness = imagenet.sharpness
    fitted = fit_sharpness(logits, imagenet, *sets["hand-checked bears + everyday photos"])
    rows = []
    with torch.no_grad():
        for name, gate, sharpness in (("ImageNet gate (as shipped)", imagenet, shipped_sharpness),
                                      ("ImageNet gate, sharpness 2 (before)", imagenet, 2.0),
                                      (f"ImageNet gate, sharpness {fitted:.2f} (fitted)", imagenet, fitted),
                                      ("ImageNet gate & distance", BothGates(imagenet, distance), shipped_sharpness)):
            imagenet.sharpness = sharpness
            row = dict(gate=name)
            for label, (v, t) in sets.items():
                log_probs = answer_log_probs(logits(v), gate(v.float()))
                row[f"ECE, {label} ({len(t)})"] = expected_calibration_error(log_probs.exp(), t)
                row[f"NLL, {label}"] = f"{torch.nn.functional.nll_loss(log_probs, t).item():.4f}"
            rows.append(row)
    imagenet.sharpness = shipped_sharpness
    return rows


def fit_sharpness(logits: Callable, gate: ImageNetGate, views: torch.Tensor, targets: torch.Tensor) -> float:
    """The ImageNet gate's sharpness that minimises the negative log-likelihood of the four answers on these
    (validation) photos: the gate's counterpart of the class head's temperature. Restores the gate's own."""
    from scipy.optimize import minimize_scalar

    from bear_classifier.model.classifier import answer_log_probs

    own, class_logits = gate.sharpness, logits(views)

    def nll(sharpness: float) -> float:
        gate.sharpness = sharpness
        with torch.no_grad():
            return torch.nn.functional.nll_loss(answer_log_probs(class_logits, gate(views.float())), targets).item()

    best = minimize_scalar(nll, bounds=(0.5, 10.0), method="bounded").x
    gate.sharpness = own
    return float(best)


def against_untouched(feats: dict) -> list[dict]:
    """The shipped decision beside the untouched network's own (whole photo; 0.05 on the four wild-bear rows, 0.02
    on teddy; species from its brown bear / American black bear / teddy rows): the reference whose rates on photos
    from elsewhere the bear targets are, here on the same pool photos for both."""

    head_probs, gate = shipped()
    imagenet = shipped_logits()[1].imagenet  # the frozen original ImageNet head: the untouched network's
    rows_of = {"black": 295, "grizzly": 294, "teddy": 850}

    def untouched(v):
        p = imagenet(v[:, 0].float()).softmax(-1)
        accept = ((p[:, [294, 295, 296, 297]].sum(-1) >= 0.05) | (p[:, 850] >= 0.02)).numpy()
        return accept, p[:, [rows_of[b] for b in BEARS]].argmax(1).numpy()

    def shipped_answer(v):
        return gate(v), head_probs(v).argmax(1)

    is_train, is_valid, y = bear_split(feats)
    held, like = negative_masks(feats)
    everyday = held & ~like
    hard_rows, hard_y = hard_checked(feats)
    bears_sets = {"hand-checked bears": (torch.from_numpy(is_valid), y[is_valid]),
                  "hard part's hand-checked bears": (hard_rows, hard_y.numpy())}
    rows = []
    with torch.no_grad():
        for name, kind, answer in (("untouched network, whole photo, 0.05 / 0.02", "untouched", untouched),
                                   ("shipped model, five views (corners count half of a wild bear), 0.075 / 0.03", "tuned", shipped_answer)):
            row = dict(decision=name)
            for label, (idx, truth) in bears_sets.items():
                accept, species = answer(feats["bears"][kind][idx])
                row[f"right, {label} ({len(truth)})"] = float((accept & (species == truth)).mean())
            neg = feats["not_bear"][kind]
            row[f"rejected, everyday ({int(everyday.sum())})"] = 1 - float(answer(neg[everyday])[0].mean())
            row[f"rejected, bear-like ({int(like.sum())})"] = 1 - float(answer(neg[like])[0].mean())
            row.update({f"rejected {k}": 1 - float(answer(v)[0].mean()) for k, v in people_sets(feats, kind).items()})
            rows.append(row)
    return rows


def table(rows: list[dict], lead: list[str]) -> str:
    cols = lead + [k for k in rows[0] if k not in lead and k != "n_valid"]
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    for r in rows:
        lines.append(" | ".join(f"{r[c]:.2%}" if isinstance(r.get(c), float) else str(r.get(c, "—")) for c in cols))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", type=float, default=0.99)
    args = parser.parse_args()
    feats = {g: load(g) for g in ("bears", "not_bear", "people")}
    print(f"(b) bears, calibrated to keep {args.keep:.1%} of the hand-checked validation photos")
    print(table(bears(feats, args.keep), ["features", "method"]))
    print(f"\n(c) bears, hard held-out part (bench/hard_holdout.py), keep {args.keep:.1%}")
    print(table(hard_part(feats, args.keep), ["features", "method"]))
    print("\n(d) calibration of the shipped bear model's shown probability")
    print(table(calibration(feats), ["gate"]))
    print("\n(e) the shipped bear model beside the untouched network's own rule, on the same photos")
    print(table(against_untouched(feats), ["decision"]))
    print(f"\n(f) few photos a class: dog/cat/car, distance gate alone, keep {args.keep:.1%}")
    print(table(few_photos(feats, ("dog", "cat", "car"), args.keep), ["photos a class", "axes"]))
    for triple in OWN_TRIPLES:
        print(f"\n(a) own classes {'/'.join(triple)} (untouched network, logistic-regression head), "
              f"keep {args.keep:.1%}")
        print(table(own_classes(feats, triple, args.keep), ["method"]))


if __name__ == "__main__":
    main()
