"""Calibration: ECE measures the gap between confidence and accuracy; a fitted temperature closes it."""
import torch

import torch.nn.functional as F

from bear_classifier.model.calibrate import expected_calibration_error, fit_temperature, plot_reliability


def overconfident_fold(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Generated answers: labels drawn from softmax(true logits), reported logits 3× too sharp."""
    g = torch.Generator().manual_seed(seed)
    true = torch.randn(n, 3, generator=g) * 2
    labels = torch.multinomial(true.softmax(-1), 1, generator=g).squeeze(1)
    return true * 3, labels


def test_temperature_fitted_on_one_fold_lowers_nll_and_ece_on_another():
    fit_logits, fit_labels = overconfident_fold(2000, seed=0)
    held_logits, held_labels = overconfident_fold(2000, seed=1)
    t = fit_temperature(fit_logits, fit_labels)
    assert 2.0 < t < 4.0  # the logits were made 3× too sharp
    assert F.cross_entropy(held_logits / t, held_labels) < F.cross_entropy(held_logits, held_labels) - 0.1  # NLL
    before = expected_calibration_error(held_logits.softmax(-1), held_labels)
    after = expected_calibration_error((held_logits / t).softmax(-1), held_labels)
    assert after < before / 2, (before, after)
    assert torch.equal((held_logits / t).argmax(1), held_logits.argmax(1))  # never changes the answer


def test_ece_of_a_calibrated_model_is_near_zero_and_of_a_liar_is_large():
    g = torch.Generator().manual_seed(2)
    conf = torch.rand(20000, generator=g) * 0.5 + 0.5
    right = torch.rand(20000, generator=g) < conf  # right exactly as often as it says
    probs = torch.stack([conf, 1 - conf], 1)
    labels = torch.where(right, 0, 1)
    assert expected_calibration_error(probs, labels) < 0.02
    assert expected_calibration_error(probs, torch.ones_like(labels)) > 0.5  # always wrong while sure


def test_reliability_diagram_is_written(tmp_path):
    logits, labels = overconfident_fold(300, seed=3)
    plot_reliability(logits.softmax(-1), labels, tmp_path / "reliability.png")
    assert (tmp_path / "reliability.png").stat().st_size > 5000
