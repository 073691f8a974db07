"""How sure a fork's class head should sound: the temperature fitted on a few dozen validation photos, judged on
photos it was not fitted on.

Each of bench.small_folders' eight sets (three pool subjects, 35-40 photos each) is trained once, as `train` trains
a fork (Recipe(), seed 42); its validation photos' class logits are split in two halves, the temperature is fitted
on one half by each rule and scored on the other (and the other way round). Scores: negative log-likelihood (a
proper score: lower is better), ECE (10 bins), and answers that are wrong although shown at 95% or more.
Rules: the fit alone within train.TEMPERATURE_BOUNDS (0.25-4); the fit, never sharper than the raw head (T >= 1);
the raw head (T = 1).
Usage: python -m bench.temperature   (about 1-2 minutes a set on 2 cores; logits cached in bench/results/)
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F

from bench.openset_features import RESULTS
from bench.own_classes import folder
from bench.small_folders import SETS

CACHE = RESULTS / "temperature_logits.pt"
RULES = {"fit, 0.25-4": (0.25, 4.0), "fit, never sharper (1-4)": (1.0, 4.0), "raw head (T = 1)": (1.0, 1.0)}


def validation_logits(subjects: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(class logits at T = 1, targets) of the validation photos of `subjects`, trained as `train` trains a fork."""
    from bear_classifier.model.classifier import heads
    from bear_classifier.training.recipe import Recipe
    from bear_classifier.training.train import train_model

    learn, _ = train_model(folder(list(subjects)), Recipe(seed=42))
    valid = [Path(p) for p in learn.dls.valid_ds.items if Path(p).parent.name in subjects]
    logits, _ = heads(learn, valid)
    return logits.float(), torch.tensor([learn.dls.vocab.o2i[p.parent.name] for p in valid])


def fitted(logits: torch.Tensor, targets: torch.Tensor, low: float, high: float) -> float:
    from bear_classifier.model.calibrate import fit_temperature

    return 1.0 if low == high == 1.0 else min(high, max(low, fit_temperature(logits.clone(), targets)))


def scores(logits: torch.Tensor, targets: torch.Tensor, t: float) -> tuple[float, float, int, int]:
    """(summed NLL, ECE times n, wrong at >= 95%, n) at temperature t: sums, so that halves pool by their photos."""
    from bear_classifier.model.calibrate import expected_calibration_error

    probs = (logits / t).softmax(-1)
    conf, pred = probs.max(-1)
    nll = float(F.cross_entropy(logits / t, targets, reduction="sum"))
    gap = expected_calibration_error(probs, targets) * len(targets)
    return nll, gap, int(((conf >= 0.95) & (pred != targets)).sum()), len(targets)


def main() -> None:
    torch.set_num_threads(2)
    cache = torch.load(CACHE) if CACHE.exists() else {}
    for subjects in SETS:
        key = "/".join(subjects)
        if key not in cache:
            cache[key] = validation_logits(subjects)
            torch.save(cache, CACHE)
        print(f"{key}: {len(cache[key][1])} validation photos", flush=True)
    totals = {rule: [0.0, 0.0, 0, 0, []] for rule in RULES}
    for logits, targets in cache.values():
        halves = [torch.arange(len(targets))[i::2] for i in (0, 1)]
        for fit_on, score_on in (halves, halves[::-1]):
            for rule, (low, high) in RULES.items():
                t = fitted(logits[fit_on], targets[fit_on], low, high)
                nll, gap, overconfident, n = scores(logits[score_on], targets[score_on], t)
                total = totals[rule]
                total[0] += nll
                total[1] += gap
                total[2] += overconfident
                total[3] += n
                total[4].append(t)
    print(f"\n{'rule':28} {'NLL':>7} {'ECE':>7} {'wrong at >=95%':>15} {'temperatures':>22}   "
          f"(fitted on half of each set's validation photos, scored on the other half; {len(cache)} sets)")
    for rule, (nll, gap, overconfident, n, ts) in totals.items():
        ts = sorted(ts)
        print(f"{rule:28} {nll / n:7.3f} {gap / n:7.2%} {overconfident:8} of {n:3} {ts[0]:7.2f} .. {ts[len(ts) // 2]:.2f} .. "
              f"{ts[-1]:.2f}")


if __name__ == "__main__":
    main()
