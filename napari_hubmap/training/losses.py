"""Segmentation losses on logits: BCE + soft Dice (default), Lovász hinge, focal."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import HubmapInputError


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - Dice over the whole batch (smoothed), so tiles without glomeruli do not blow it up."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    return 1 - (2 * inter + eps) / (prob.sum() + target.sum() + eps)


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target) + soft_dice_loss(logits, target)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25) -> torch.Tensor:
    """Lin et al.'s focal loss, mean over pixels."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)
    weight = alpha * target + (1 - alpha) * (1 - target)
    return (weight * (1 - p_t) ** gamma * bce).mean()


def _lovasz_grad(sorted_truth: torch.Tensor) -> torch.Tensor:
    total = sorted_truth.sum()
    intersection = total - sorted_truth.cumsum(0)
    union = total + (1 - sorted_truth).cumsum(0)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_hinge_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Berman et al.'s Lovász hinge (per image, averaged): a convex surrogate of 1 - IoU."""
    losses = []
    for logit, truth in zip(logits.flatten(1), target.flatten(1)):
        signs = 2.0 * truth - 1.0
        errors = 1.0 - logit * signs
        errors_sorted, order = torch.sort(errors, descending=True)
        grad = _lovasz_grad(truth[order])
        losses.append(torch.dot(F.relu(errors_sorted), grad))
    return torch.stack(losses).mean()


LOSS_FUNCTIONS = {"bce_dice": bce_dice_loss, "lovasz": lovasz_hinge_loss, "focal": focal_loss}


def loss_function(name: str):
    try:
        return LOSS_FUNCTIONS[name]
    except KeyError:
        raise HubmapInputError(None, f"unknown loss {name!r} (known: {', '.join(LOSS_FUNCTIONS)})") from None
