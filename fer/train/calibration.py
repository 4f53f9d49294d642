"""Calibrated confidence: temperature scaling fitted on PublicTest, judged on PrivateTest.

A network trained with cross-entropy is usually over- or under-confident: of the faces it calls
"Happy, 0.9", far fewer or more than 90% are Happy. Dividing the logits by one temperature T,
chosen to minimise the negative log-likelihood on the validation split, fixes most of that without
changing a single prediction (Guo et al. 2017, "On Calibration of Modern Neural Networks").

The expected calibration error (ECE) measures what is left: faces binned by confidence, the
gap between each bin's accuracy and its mean confidence, weighted by the bin's share of faces.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchmetrics.functional.classification import multiclass_f1_score

from fer.preprocess import normalize
from fer.tta import TTA_MODES, VIEWS_PER_FACE, every_mode_logits, widest

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


# Images per forward pass. On a quiet 2-core Xeon, PublicTest's ten views ran twice as fast 128 at a time as 2048
# at a time (bf16; fp32 1.4x): small batches stay in cache. With other work on the same cores it is the other way
# round (each pass waits for both threads), but a run is timed alone.
IMAGES_PER_PASS = 128


@torch.inference_mode()
def split_logits(
    model,
    images: torch.Tensor,
    mean: float,
    std: float,
    input_size: int,
    mode: str,
    bf16: bool = False,
    images_per_pass: int = IMAGES_PER_PASS,
) -> torch.Tensor:
    """uint8 faces (N, S, S) -> (N, classes) fp32 logits under a TTA mode, in eval mode, on the model's device."""
    return split_mode_logits(model, images, mean, std, input_size, (mode,), bf16, images_per_pass)[mode]


@torch.inference_mode()
def split_mode_logits(
    model,
    images: torch.Tensor,
    mean: float,
    std: float,
    input_size: int,
    modes=TTA_MODES,
    bf16: bool = False,
    images_per_pass: int = IMAGES_PER_PASS,
    centre: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """uint8 faces (N, S, S) -> {mode: (N, classes) fp32 logits}: one pass over the faces serves every mode.

    bf16: the network computes in bfloat16 (autocast; fer.train.precision.reports_in_bfloat16 says when).
    centre: the faces' centre-crop logits (N, classes) when known already (the test step's): not recomputed."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    faces_per_pass = max(1, images_per_pass // VIEWS_PER_FACE[widest(modes)])
    parts = {mode: [] for mode in modes}
    with batchnorm_folded(model), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(images), faces_per_pass):
            x = normalize(images[i : i + faces_per_pass].to(device), mean, std)
            known = centre[i : i + faces_per_pass].to(device).float() if centre is not None else None
            logits = every_mode_logits(lambda v: model(v).float(), x, input_size, modes, known, images_per_pass)
            for mode in modes:
                parts[mode].append(logits[mode].cpu())
    model.train(was_training)
    return {mode: torch.cat(p) if p else torch.zeros((0, 0)) for mode, p in parts.items()}


@contextmanager
def batchnorm_folded(model: nn.Module):
    """While the block runs, each convolution that an nn.Sequential follows with a BatchNorm computes both:
    in eval mode the same function with one pass over the activations fewer (the regularized network's
    evaluation: about a quarter faster). The model has its own layers back afterwards."""
    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Sequential) and (folded := _folded(child)) is not None:
                setattr(parent, name, folded)
                swapped.append((parent, name, child))
    try:
        yield
    finally:
        for parent, name, child in reversed(swapped):
            setattr(parent, name, child)


def _folded(block: nn.Sequential) -> nn.Sequential | None:
    layers, out = list(block), []
    for layer in layers:
        if isinstance(layer, nn.BatchNorm2d) and out and isinstance(out[-1], nn.Conv2d) and layer.track_running_stats:
            out[-1] = fuse_conv_bn_eval(out[-1], layer)
        else:
            out.append(layer)
    return nn.Sequential(*out) if len(out) < len(layers) else None


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
    bf16: bool = False,
    test_centre: torch.Tensor | None = None,
) -> dict:
    """For each TTA mode: T fitted on the validation faces, and the test faces' accuracy, macro-F1,
    NLL and reliability (with ECE) before and after dividing by T.

    val, test: (uint8 faces (N, S, S), labels (N,)). One pass over each split gives every mode's logits;
    test_centre: the test faces' centre-crop logits from the test step, when it had them, not recomputed."""
    val_logits = split_mode_logits(model, val[0], mean, std, input_size, modes, bf16)
    test_logits = split_mode_logits(model, test[0], mean, std, input_size, modes, bf16, centre=test_centre)
    result = {}
    for mode in modes:
        temperature = fit_temperature(val_logits[mode], val[1])
        scores = _scores(test_logits[mode], test[1], temperature, val_logits[mode].shape[1])
        result[mode] = {"temperature": temperature, **scores}
    return result
