"""Calibrated confidence: temperature scaling fitted on PublicTest, judged on PrivateTest.

A network trained with cross-entropy is usually over- or under-confident: of the faces it calls
"Happy, 0.9", far fewer or more than 90% are Happy. Dividing the logits by one temperature T,
chosen to minimise the negative log-likelihood on the validation split, fixes most of that without
changing a single prediction (Guo et al. 2017, "On Calibration of Modern Neural Networks").

The expected calibration error (ECE) measures what is left: faces binned by confidence, the
gap between each bin's accuracy and its mean confidence, weighted by the bin's share of faces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_f1_score

from fer.preprocess import normalize
from fer.tta import TTA_MODES, every_mode_logits

N_BINS = 15


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 that minimises cross-entropy(logits / T, labels)."""
    # Called after a test too, where Lightning has turned autograd off (inference mode): fit with it on,
    # on copies made outside inference mode.
    with torch.inference_mode(False), torch.enable_grad():
        return _fit_temperature(logits.detach().clone().double(), labels.detach().clone())


def _fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # T = exp(log_t) stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def reliability(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> dict:
    """Confidence bins (equal width over 0..1): faces, mean confidence and accuracy in each, and the ECE."""
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).double()
    # Bin b holds confidences in (b/n, (b+1)/n]: the convention torchmetrics' calibration error uses.
    index = (torch.ceil(confidence.double() * n_bins).long() - 1).clamp(0, n_bins - 1)
    count = torch.bincount(index, minlength=n_bins).double()
    conf_sum = torch.bincount(index, weights=confidence.double(), minlength=n_bins)
    correct_sum = torch.bincount(index, weights=correct, minlength=n_bins)
    seen = count.clamp(min=1)
    mean_conf, accuracy = conf_sum / seen, correct_sum / seen
    ece = float(((count / max(len(labels), 1)) * (accuracy - mean_conf).abs()).sum())
    return {"count": count.long().tolist(), "confidence": mean_conf.tolist(), "accuracy": accuracy.tolist(), "ece": ece}


@torch.no_grad()
def split_logits(
    model, images: torch.Tensor, mean: float, std: float, input_size: int, mode: str, batch_size: int = 512
) -> torch.Tensor:
    """uint8 faces (N, S, S) -> (N, classes) logits under a TTA mode, in eval mode, on the model's device."""
    return split_mode_logits(model, images, mean, std, input_size, (mode,), batch_size)[mode]


@torch.no_grad()
def split_mode_logits(
    model, images: torch.Tensor, mean: float, std: float, input_size: int, modes=TTA_MODES, batch_size: int = 512
) -> dict[str, torch.Tensor]:
    """uint8 faces (N, S, S) -> {mode: (N, classes) logits}: one pass over the faces serves every mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    parts = {mode: [] for mode in modes}
    for i in range(0, len(images), batch_size):
        x = normalize(images[i : i + batch_size].to(device), mean, std)
        for mode, logits in every_mode_logits(model, x, input_size, modes).items():
            parts[mode].append(logits.float().cpu())
    model.train(was_training)
    return {mode: torch.cat(p) if p else torch.zeros((0, 0)) for mode, p in parts.items()}


def _scores(logits: torch.Tensor, labels: torch.Tensor, temperature: float, num_classes: int) -> dict:
    """Test scores of one TTA mode: accuracy, macro-F1, and NLL and reliability before and after temperature T."""
    before = torch.softmax(logits, 1)
    after = torch.softmax(logits / temperature, 1)
    return {
        "acc": float((logits.argmax(1) == labels).double().mean()),
        "f1_macro": float(multiclass_f1_score(logits.argmax(1), labels, num_classes, average="macro")),
        "nll": float(F.cross_entropy(logits, labels)),
        "nll_calibrated": float(F.cross_entropy(logits / temperature, labels)),
        "reliability": reliability(before, labels),
        "reliability_calibrated": reliability(after, labels),
    }


def report(
    model,
    val: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    mean: float,
    std: float,
    input_size: int,
    modes=TTA_MODES,
) -> dict:
    """For each TTA mode: T fitted on the validation faces, and the test faces' accuracy, macro-F1,
    NLL and reliability (with ECE) before and after dividing by T.

    val, test: (uint8 faces (N, S, S), labels (N,)). One pass over each split gives every mode's logits.
    """
    val_logits = split_mode_logits(model, val[0], mean, std, input_size, modes)
    test_logits = split_mode_logits(model, test[0], mean, std, input_size, modes)
    result = {}
    for mode in modes:
        temperature = fit_temperature(val_logits[mode], val[1])
        scores = _scores(test_logits[mode], test[1], temperature, val_logits[mode].shape[1])
        result[mode] = {"temperature": temperature, **scores}
    return result
