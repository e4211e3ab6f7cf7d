"""Every trainer preset builds, takes a training step on the CPU and survives a registry round trip.

Each preset is built the way the trainer builds it (``preset_card`` + ``build_module``), trained for
one BCE + Dice step on a random (2, 3, 64, 64) batch (64 px is enough for every preset, the Swin-T
one included), saved with ``save_model`` and loaded back with ``load_model``: the loaded network must
give the same eval-mode output as the one saved. Unknown presets and tiles that are not a multiple of
32 are refused with a clear message.
"""

from __future__ import annotations

import pytest
import torch

from napari_hubmap.errors import HubmapInputError
from napari_hubmap.registry import build_module, load_model, save_model
from napari_hubmap.training import PRESETS, TrainConfig, preset_card
from napari_hubmap.training.losses import bce_dice_loss
from napari_hubmap.training.presets import preset

TILE = 64
BATCH = 2


def preset_model(name: str):
    """(card, fresh module) of a preset, as the trainer makes them."""
    card = preset_card(name, name, tile=TILE, downscale=4.0, target_mpp=2.0)
    return card, build_module(card)


def training_step(module: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """One forward/backward pass in train mode; the logits."""
    module.train()
    module.zero_grad(set_to_none=True)
    logits = module(images)
    bce_dice_loss(logits, masks).backward()
    return logits


def gradients(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad for p in module.parameters() if p.grad is not None]


def eval_output(module: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module.eval()(images)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_trains_a_step_and_round_trips(name, tmp_path):
    torch.manual_seed(0)
    card, module = preset_model(name)
    images = torch.randn(BATCH, 3, TILE, TILE)
    masks = (torch.rand(BATCH, 1, TILE, TILE) > 0.7).float()

    logits = training_step(module, images, masks)

    assert logits.shape == (BATCH, 1, TILE, TILE)
    grads = gradients(module)
    assert grads, f"{name}: no parameter got a gradient"
    assert all(torch.isfinite(g).all() for g in grads), f"{name}: a gradient is not finite"
    assert any(g.abs().sum() > 0 for g in grads), f"{name}: every gradient is zero"

    saved_output = eval_output(module, images)
    save_model(module, card, tmp_path / name)
    loaded = load_model(tmp_path / name)
    assert loaded.card.architecture == card.architecture and loaded.card.encoder == card.encoder
    assert torch.allclose(eval_output(loaded.module, images), saved_output, atol=1e-6)


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(HubmapInputError, match="unknown preset 'nope'") as caught:
        preset("nope")
    for known in PRESETS:
        assert known in str(caught.value)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_tile_not_a_multiple_of_32_is_refused(name):
    with pytest.raises(HubmapInputError, match="multiple of 32"):
        preset_card(name, name, tile=TILE + 16, downscale=4.0, target_mpp=2.0)


def test_training_settings_refuse_a_tile_not_a_multiple_of_32():
    with pytest.raises(HubmapInputError, match="multiples of 32"):
        TrainConfig(tile=250)
