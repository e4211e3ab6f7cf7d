"""MixStyle in training, measured (issue 12; not shipped: `models/README.md`, *MixStyle*).

MixStyle (Zhou et al., "Domain generalization with MixStyle", ICLR 2021) mixes the feature statistics of the
images of a batch in a network's early layers while it trains: each feature map is normalised by its own
per-channel mean and spread, then given a random blend of its own and another image's. Early-layer statistics
carry an image's style (stain, scanner), so the network learns to find glomeruli under styles between its
sources. At evaluation the layers are the network's own: the saved weights run as any other model, nothing
changes in prediction.

Here it is added to the shipped recipe from outside the trainer: the trainer (``napari-hubmap train``) runs in
this process with forward hooks on the encoder's early blocks (EfficientNet-B0 blocks 2 and 4, strides 4 and 8),
active in training mode only, with probability :data:`P` per batch and blend weights drawn from Beta(:data:`ALPHA`,
:data:`ALPHA`), as the paper's defaults.

    python benchmarks/mixstyle.py RUN [--threads N]      # RUN e.g. loso-hubmap-pas@mixstyle
    python benchmarks/generalisation.py score RUN

The run's model, log and figures go where ``generalisation.py`` puts them (``bench-out/generalisation/``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

P = 0.5
"""Chance that a batch's statistics are mixed at each hooked block."""
ALPHA = 0.1
"""Beta(ALPHA, ALPHA) blend weights: most near 0 or 1, a few halfway."""
BLOCKS = (2, 4)
"""EfficientNet blocks whose outputs are mixed (the ends of the encoder's first two stages)."""


def mix_styles(module, inputs, output, eps: float = 1e-6):
    """Forward hook: ``output`` with its per-image, per-channel statistics blended with another image's."""
    if not module.training or output.size(0) < 2 or torch.rand(()).item() > P:
        return output
    batch = output.size(0)
    mean = output.mean(dim=(2, 3), keepdim=True).detach()
    std = (output.var(dim=(2, 3), keepdim=True) + eps).sqrt().detach()
    weight = torch.distributions.Beta(ALPHA, ALPHA).sample((batch, 1, 1, 1)).to(output)
    other = torch.randperm(batch, device=output.device)
    mixed_mean = weight * mean + (1 - weight) * mean[other]
    mixed_std = weight * std + (1 - weight) * std[other]
    return (output - mean) / std * mixed_std + mixed_mean


def with_mixstyle(build):
    """``registry.build_module`` whose networks carry the hooks (EfficientNet encoders only)."""
    def built(card):
        module = build(card)
        blocks = getattr(module.encoder, "_blocks", None)
        if blocks is None:
            raise SystemExit(f"MixStyle here needs an EfficientNet encoder, not {type(module.encoder).__name__}")
        for index in BLOCKS:
            blocks[index].register_forward_hook(mix_styles)
        return module
    return built


def trainer(args: list[str]) -> int:
    """``napari-hubmap train ARGS`` in this process, its networks with MixStyle."""
    from napari_hubmap.cli import main
    from napari_hubmap.training import loop

    loop.build_module = with_mixstyle(loop.build_module)
    return main(["train", *args])


def run(name: str, threads: int) -> int:
    import generalisation as g

    command = g.train_command(name)
    assert command[1:4] == ["-m", "napari_hubmap.cli", "train"], command
    command = [command[0], str(Path(__file__).resolve()), "--trainer", *command[4:]]
    g.OUT.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    with open(g.OUT / f"{name}.jsonl", "w") as stdout, open(g.OUT / f"{name}.err", "w") as stderr:
        return subprocess.call(command, stdout=stdout, stderr=stderr, env=env, cwd=g.ROOT)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--trainer"]:
        raise SystemExit(trainer(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a generalisation.py run with the variant mixstyle, e.g. loso-hubmap-pas@mixstyle")
    parser.add_argument("--threads", type=int, default=2)
    options = parser.parse_args()
    raise SystemExit(run(options.run, options.threads))
