"""Is "Probability: 0.97" right 97% of the time? Expected calibration error, temperature scaling, a reliability diagram."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F


def reliability_bins(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 10):
    """Per equal-width bin of top-class probability: (count, mean confidence, accuracy), as three tensors."""
    conf, pred = probs.max(1)
    correct = (pred == targets).float()
    which = (conf * n_bins).long().clamp(max=n_bins - 1)
    count = torch.bincount(which, minlength=n_bins).float()
    total_conf = torch.zeros(n_bins).index_add_(0, which, conf.float())
    total_correct = torch.zeros(n_bins).index_add_(0, which, correct)
    safe = count.clamp_min(1)
    return count, total_conf / safe, total_correct / safe


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 10) -> float:
    """ECE: the gap between confidence and accuracy, averaged over bins weighted by how many answers fall in each."""
    count, conf, acc = reliability_bins(probs, targets, n_bins)
    return float((count * (conf - acc).abs()).sum() / count.sum().clamp_min(1))


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature T > 0 that minimises the negative log-likelihood of softmax(logits / T) (Guo et al., 2017).

    One number, so it changes how sure the model sounds, never which class it picks.
    """
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)
    logits, targets = logits.detach().float(), targets.detach()

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def plot_reliability(probs: torch.Tensor, targets: torch.Tensor, path: Path, n_bins: int = 10,
                     title: str = "Reliability of the shown probability") -> None:
    """Accuracy against confidence per bin, with the diagonal a calibrated model would follow."""
    import matplotlib.pyplot as plt

    count, conf, acc = reliability_bins(probs, targets, n_bins)
    centres = (torch.arange(n_bins) + 0.5) / n_bins
    shown = count > 0
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
    ax.bar(centres[shown], acc[shown], width=1 / n_bins, edgecolor="black", alpha=0.7, label="accuracy")
    for x, y, n in zip(centres[shown].tolist(), acc[shown].tolist(), count[shown].int().tolist()):
        ax.text(x, min(y + 0.02, 0.97), str(n), ha="center", fontsize=7)
    ece = expected_calibration_error(probs, targets, n_bins)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="shown probability (top class)", ylabel="share right",
           title=f"{title}\nECE {100 * ece:.2f}% over {int(count.sum())} photos (numbers: photos per bin)")
    ax.legend(loc="upper left")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
