"""The training run: plan (data, split, model) -> epochs of steps -> validate -> register the best.

``train`` is the one entry point (the CLI, the widget's subprocess and torchrun ranks all call it). It
reports :class:`~napari_hubmap.progress.Progress` in optimiser steps (``details``: the events, see
:mod:`napari_hubmap.training`), stops when its ``cancel`` event is set (at the next step, after saving a
resume checkpoint, raising :class:`~napari_hubmap.progress.Cancelled`), and returns a :class:`TrainResult`.
The best weights (EMA, by validation Dice or object F1: ``TrainConfig.select_by``) are saved to the registry
folder ``out`` whenever they improve, atomically, so an interruption never leaves an unloadable model.
Rank 0 holds the model folder's write lock (:func:`napari_hubmap.registry.store.model_lock`) for the whole
run, resume checkpoint included: a second run into the same ``out`` gets one error naming the first.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import HubmapInputError
from ..progress import Cancelled, ProgressCallback, report
from ..registry import ModelCard, build_module, load_model, save_model, update_card
from ..registry.store import model_lock
from . import distributed
from .augment import training_augmentation
from .checkpoint import checkpoint_folder, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .losses import loss_function
from .presets import preset_card
from .sizes import floor_choices_px, object_floor_um2
from .sampling import TileDataset, TileSampler
from .sources import Sample, describe, load_sources, manifest_hash
from .split import split_samples
from .standardise import colour_spread, standardised_run
from .validate import MIN_OBJECT_PX, tta_picks, validation_scores


@dataclass
class TrainResult:
    model: Path | None
    card: ModelCard | None
    history: list = field(default_factory=list)
    best: dict = field(default_factory=dict)
    epochs_run: int = 0
    rank_digests: list = field(default_factory=list)


class EMA:
    """Exponential moving average of a module's parameters and buffers (what is validated and saved)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(module).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))  # warm-up: early weights are forgotten fast
        ema_state = self.module.state_dict()
        for name, value in module.state_dict().items():
            target = ema_state[name]
            if value.dtype.is_floating_point:
                target.mul_(decay).add_(value.detach(), alpha=1 - decay)
            else:
                target.copy_(value)


def set_batchnorm_momentum(module: torch.nn.Module, momentum: float) -> None:
    """EfficientNet ports keep TensorFlow's 0.01: running statistics then lag hundreds of steps behind
    the weights, and the eval-mode model that is validated and saved predicts nothing for a while."""
    for layer in module.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.momentum = momentum


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1, then cosine down to 1 % of the peak learning rate."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def pick_device(name: str) -> torch.device:
    from ..inference.engine import pick_device as engine_pick

    return engine_pick(name)


def starting_card(config: TrainConfig, out: Path) -> tuple[ModelCard, dict | None]:
    """The new model's card (from the preset, or the base model's card) and the base weights if any."""
    name = config.name or out.name
    if config.base:
        base = load_model(config.base)
        card = base.card.replace(name=name, parent=base.card.name, metrics={}, training_data={}, tta_picks={},
                                 weights_sha256="", created="")  # picked again for the new weights
        return card, {k: v.detach().clone() for k, v in base.module.state_dict().items()}
    return preset_card(config.preset, name, tile=config.infer_tile, downscale=config.downscale,
                       target_mpp=config.target_mpp), None


@dataclass
class _Run:
    """What a run holds between its stages."""

    config: TrainConfig
    out: Path
    card: ModelCard
    train: list
    val: list
    data: dict
    device: torch.device
    world: distributed.World
    module: torch.nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    history: list = field(default_factory=list)
    best: dict = field(default_factory=dict)
    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0  # steps finished of the epoch under way (resume mid-epoch)
    loss_sum: float = 0.0
    stale: int = 0  # epochs since the best
    floors: dict = field(default_factory=dict)  # candidate size floors, px -> µm² (see floor_choices)


def floor_choices(run: _Run) -> dict[int, float]:
    """The card's candidate size floors (working px -> µm²), from the training glomeruli, worked out once."""
    if not run.floors:
        mpp = run.card.target_mpp
        run.floors = floor_choices_px(object_floor_um2(run.train, mpp), mpp, MIN_OBJECT_PX)
    return run.floors


def _state(run: _Run) -> dict:
    return {"epoch": run.epoch, "step_in_epoch": run.step_in_epoch, "loss_sum": run.loss_sum,
            "history": run.history, "best": run.best, "stale": run.stale, "config": run.config.as_dict(),
            "card": run.card.to_json(), "data_sha256": run.data["manifest_sha256"],
            "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else {}}


def _same_settings(saved: dict, config: TrainConfig) -> list[str]:
    """Settings that differ between a checkpoint and now (epochs, patience and workers may change); a setting
    newer than the checkpoint counts as its default there."""
    free = {"epochs", "patience", "workers", "device", "min_epochs"}
    now = config.as_dict()
    before = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    return sorted(k for k in now if k not in free and saved.get(k, before.get(k)) != now[k])


def _save_checkpoint(run: _Run) -> Path:
    folder = checkpoint_folder(run.out)
    save_checkpoint(folder, model=_plain(run.module).state_dict(), ema=run.ema.module.state_dict(),
                    optimizer=run.optimizer.state_dict(), state=_state(run))
    return folder


def _remove_checkpoint(folder: Path) -> None:
    """Renamed out of the resume path first, then deleted: a kill half-way never leaves a torn checkpoint
    (a folder missing its tensors) for the next run to resume from."""
    doomed = folder.with_name(f".{folder.name}.removed-{os.getpid()}")
    os.replace(folder, doomed)
    shutil.rmtree(doomed)


def _plain(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


def _resume(run: _Run, folder: Path) -> None:
    model, ema, optimizer, state = load_checkpoint(folder)
    changed = _same_settings(state["config"], run.config)
    if changed:
        raise HubmapInputError(folder, f"checkpoint was made with other settings ({', '.join(changed)}); "
                                       "use the same settings or start over with --no-resume")
    if state["data_sha256"] != run.data["manifest_sha256"]:
        raise HubmapInputError(folder, "checkpoint was made from other training data; start over with --no-resume")
    _plain(run.module).load_state_dict(model)
    run.ema.module.load_state_dict(ema)
    run.optimizer.load_state_dict(optimizer)
    if state.get("scaler") and run.scaler.is_enabled():
        run.scaler.load_state_dict(state["scaler"])
    run.epoch, run.step_in_epoch, run.loss_sum = state["epoch"], state["step_in_epoch"], state["loss_sum"]
    run.history, run.best, run.stale = state["history"], state["best"], state["stale"]
    run.card = ModelCard.from_json(state["card"], folder)


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    ckpt = checkpoint_folder(out)
    if out.exists() and not (resume and ckpt.exists()) and not overwrite:
        raise HubmapInputError(out, "already exists; choose another --out, or --overwrite to replace it")
    if not resume and ckpt.exists():
        shutil.rmtree(ckpt)


def _plan(config: TrainConfig, out: Path, data_paths, mpp, synthetic, samples, world, device) -> _Run:
    torch.manual_seed(config.seed)
    card, base_weights = starting_card(config, out)
    if samples is None:
        samples = load_sources(data_paths, downscale=card.downscale, target_mpp=card.target_mpp,
                               mpp_overrides=mpp, synthetic=synthetic, labels=config.labels)
    train, val = split_samples(samples, config)
    card, train, val = standardised_run(config, card, train, val)
    data = {"sources": describe(samples), "manifest_sha256": manifest_hash(samples),
            "train_images": [s.name for s in train], "validation_images": [s.name for s in val],
            "paths": [str(p) for p in data_paths or []], "synthetic": synthetic, "mpp": dict(mpp or {})}
    module = build_module(card)
    if base_weights is not None:
        module.load_state_dict(base_weights)
    set_batchnorm_momentum(module, config.bn_momentum)
    module = module.to(device)
    if device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    ema = EMA(module, config.ema_decay)
    if world.distributed:
        # some encoders hold layers the decoder never uses (EfficientNet's head): let DDP skip them
        module = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[world.local_rank] if device.type == "cuda" else None, find_unused_parameters=True)
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
    return _Run(config, out, card, train, val, data, device, world, module, ema, optimizer, scaler)


def tile_loader(config: TrainConfig, train: list, normalization: dict, device: torch.device, epoch: int,
                start_step: int = 0, rank: int = 0, world_size: int = 1) -> torch.utils.data.DataLoader:
    """The batches of one epoch for one rank: seeded tiles of ``train``, augmented and normalised, from
    step ``start_step`` on (a resumed run skips the steps it took)."""
    c = config
    per_rank = c.steps_for(world_size) * c.batch
    spread = colour_spread(train) if c.colour_augment == "randstain" else None
    dataset = TileDataset(TileSampler(train, c.tile, c.positive_fraction), per_rank, normalization,
                          training_augmentation(c.tile, colour=c.colour_augment, lab_spread=spread),
                          seed=c.seed, rank=rank)
    dataset.set_epoch(epoch)
    indices = list(range(start_step * c.batch, per_rank))
    return torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=c.batch,
                                       num_workers=c.workers, shuffle=False, drop_last=False,
                                       pin_memory=device.type == "cuda", persistent_workers=False,
                                       worker_init_fn=leave_stop_signals_to_the_trainer,
                                       generator=torch.Generator().manual_seed(c.seed * 100003 + epoch))


def leave_stop_signals_to_the_trainer(_worker_id: int) -> None:
    """A loader worker ignores SIGTERM and SIGINT: a whole process group stopped at once (a terminal's Ctrl-C,
    ``kill -- -PGID``, a batch scheduler's preemption) reaches the trainer too, which saves its checkpoint and
    shuts the workers down; a worker killed under it would end the run in a crash instead (torch's loader raises
    "DataLoader worker is killed by signal"). A worker whose trainer died exits by itself (torch's watchdog)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def training_step(module: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                  loss_fn, images: torch.Tensor, masks: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One optimiser step on a batch (AMP and channels_last on CUDA); the batch loss, detached."""
    images = images.to(device, non_blocking=True)
    masks = masks.to(device, non_blocking=True)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=device.type, enabled=scaler.is_enabled()):
        loss = loss_fn(module(images).float(), masks)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def _report(run: _Run, progress: ProgressCallback, done: int, event: dict, message: str = "") -> None:
    """A training event as :class:`~napari_hubmap.progress.Progress`: ``done`` of all the run's steps."""
    report(progress, done, run.config.epochs * run.config.steps_for(run.world.size), message, event)


def epoch_line(event: dict) -> str:
    """``epoch 2/6: loss 0.412, validation Dice 0.801 (best, saved)``: what an ``epoch`` event says."""
    dice = "-" if event["val_dice"] is None else f"{event['val_dice']:.3f}"
    return (f"epoch {event['epoch']}/{event['epochs']}: loss {event['train_loss']:.3f}, "
            f"validation Dice {dice}{' (best, saved)' if event['best'] else ''}")


def _train_epoch(run: _Run, epoch: int, progress: ProgressCallback, cancel: threading.Event) -> float:
    """Steps of one epoch (from where a resumed run stopped); the mean loss over its steps."""
    c = run.config
    loss_fn = loss_function(c.loss)
    steps = c.steps_for(run.world.size)
    total = c.epochs * steps
    warmup = round(c.warmup_epochs * steps)
    run.module.train()
    step = run.step_in_epoch
    loader = tile_loader(c, run.train, run.card.normalization, run.device, epoch, step, run.world.rank,
                         run.world.size)
    for images, masks in loader:
        if distributed.broadcast(run.world, cancel.is_set()):
            _save_checkpoint(run) if run.world.main else None
            raise Cancelled(f"training cancelled; resume checkpoint {checkpoint_folder(run.out)}")
        global_step = epoch * steps + step
        for group in run.optimizer.param_groups:
            group["lr"] = c.lr * lr_factor(global_step, total, warmup)
        loss = training_step(run.module, run.optimizer, run.scaler, loss_fn, images, masks, run.device)
        run.ema.update(_plain(run.module), global_step)
        value = distributed.mean(run.world, float(loss), run.device)
        run.loss_sum += value
        step += 1
        run.step_in_epoch = step
        _report(run, progress, epoch * steps + step, {"event": "step", "epoch": epoch + 1, "step": step, "steps": steps,
                                                      "loss": value, "lr": run.optimizer.param_groups[0]["lr"]},
                f"loss {value:.3f}")
    mean_loss = run.loss_sum / max(1, step)
    run.step_in_epoch, run.loss_sum = 0, 0.0
    return mean_loss


def _validate_and_register(run: _Run, epoch: int, train_loss: float, seconds: float, progress: ProgressCallback) -> bool:
    """Rank 0: validate the EMA weights, save them if best; every rank: whether to stop now."""
    c = run.config
    stop = False
    if run.world.main:
        scores = validation_scores(run.ema.module, run.val, run.card.normalization, run.device, c.thresholds,
                                   min_sizes=tuple(floor_choices(run)))
        improved = not run.val or not run.best or _selection_key(scores, c.select_by) > _selection_key(run.best, c.select_by)
        entry = {"epoch": epoch + 1, "train_loss": train_loss, "val_dice": scores.get("dice"),
                 "val_object_f1": scores.get("object_f1"), "threshold": scores.get("threshold"),
                 "val_dice_by_source": {k: v["dice"] for k, v in scores.get("by_source", {}).items()},
                 "lr": run.optimizer.param_groups[0]["lr"], "seconds": seconds}
        run.history.append(entry)
        if improved:
            run.best = {**scores, "epoch": epoch + 1, "train_loss": train_loss}
            run.stale = 0
            _register(run)
        else:
            run.stale += 1
        stop = bool(run.val) and epoch + 1 >= c.min_epochs and run.stale >= c.patience
        event = {"event": "epoch", "epochs": c.epochs, "best": improved, **entry}
        _report(run, progress, (epoch + 1) * c.steps_for(run.world.size), event, epoch_line(event))
    return bool(distributed.broadcast(run.world, stop))


def _selection_key(scores: dict, select_by: str) -> tuple:
    """How validation scores rank epochs (higher is better): see ``TrainConfig.select_by``."""
    if select_by == "object_f1":
        return (scores.get("object_f1") or 0.0, scores.get("dice") or 0.0)
    return (scores.get("dice") or 0.0,)


def _register(run: _Run) -> None:
    c = run.config
    metrics = {"validation": {k: v for k, v in run.best.items() if k != "by_source"},
               "validation_by_source": run.best.get("by_source", {})}
    training = {**run.data, "config": c.as_dict(), "epoch": run.best["epoch"],
                "note": "metrics are on whole validation images at the working scale"}
    card = run.card.replace(threshold=float(run.best.get("threshold", run.card.threshold)), metrics=metrics,
                            training_data=training, created="",
                            min_object_um2=_card_floor(run), outline_threshold=run.best.get("outline_threshold"))
    save_model(run.ema.module, card, run.out)


def _register_tta_picks(run: _Run) -> None:
    """The registered (best) weights' test-time augmentation picks, on the validation images, into their card
    (before the checkpoint goes, so a run killed here picks them when resumed)."""
    model = load_model(run.out, run.device)
    picks = tta_picks(model.module, run.val, model.card.normalization, run.device, run.config.thresholds,
                      int(run.best.get("min_size_px", MIN_OBJECT_PX)))
    update_card(run.out, model.card.replace(tta_picks=picks))


def _card_floor(run: _Run) -> float:
    """The card's ``min_object_um2``: the floor the best epoch's validation picked (the smallest without
    validation images)."""
    choices = floor_choices(run)
    return choices.get(run.best.get("min_size_px"), choices[min(choices)])


def train(config: TrainConfig, data_paths=None, out=None, *, mpp: dict | None = None, synthetic: int = 0,
          samples: list[Sample] | None = None, progress: ProgressCallback | None = None,
          cancel: threading.Event | None = None, resume: bool = True, overwrite: bool = False) -> TrainResult:
    """Train (or resume) a model and register its best weights in ``out``; see the module doc.

    ``progress`` gets :class:`~napari_hubmap.progress.Progress` in optimiser steps of the whole run
    (``epochs`` x steps per epoch, a constant total; a resumed run starts at the steps it took; a run stopped
    early by ``patience`` ends short of it), its ``details`` the event (``start``, ``step``, ``epoch``: see
    :mod:`napari_hubmap.training`), its ``message`` the loss of a step or the summary of an epoch (``epoch``
    on rank 0 only). ``cancel`` set: at the next step the resume checkpoint ``<out>.checkpoint`` is
    saved (the best weights so far stay registered in ``out``) and :class:`~napari_hubmap.progress.Cancelled`
    is raised; the next call with the same settings resumes there."""
    cancel = cancel or threading.Event()
    out = Path(out)
    world = distributed.world_from_env()
    device = pick_device(config.device)
    distributed.start(world, device)
    try:
        with model_lock(out, "training") if world.main else contextlib.nullcontext():  # rank 0 writes
            if world.main:
                _check_out(out, resume, overwrite)
            distributed.broadcast(world, True)  # the others wait until rank 0 has checked and cleaned up
            return _run_all(config, out, data_paths, mpp, synthetic, samples, world, device, progress, cancel, resume)
    finally:
        distributed.stop(world)


def _run_all(config, out, data_paths, mpp, synthetic, samples, world, device, progress, cancel, resume) -> TrainResult:
    run = _plan(config, out, data_paths, mpp, synthetic, samples, world, device)
    ckpt = checkpoint_folder(out)
    if resume and ckpt.exists():
        _resume(run, ckpt)
    elif world.main:  # before anything is registered in ``out``: a kill from here on leaves a run to resume
        _save_checkpoint(run)
    steps = config.steps_for(world.size)
    _report(run, progress, run.epoch * steps + run.step_in_epoch,
            {"event": "start", "epochs": config.epochs, "steps_per_epoch": steps, "train_samples": len(run.train),
             "val_images": len(run.val), "out": str(out), "resumed_at": run.epoch, "device": str(run.device),
             "world": world.size})
    while run.epoch < config.epochs:
        started = time.perf_counter()
        loss = _train_epoch(run, run.epoch, progress, cancel)
        stop = _validate_and_register(run, run.epoch, loss, time.perf_counter() - started, progress)
        run.epoch += 1
        if world.main:
            _save_checkpoint(run)
        if stop:
            break
    digests = distributed.gather(world, distributed.weights_digest(_plain(run.module)))
    if world.main and run.best and run.val:
        _register_tta_picks(run)
    if world.main and ckpt.exists():
        _remove_checkpoint(ckpt)
    card = None
    if world.main and out.exists():
        from ..registry import read_card

        card = read_card(out)
    return TrainResult(out, card, run.history, run.best, run.epoch, digests)
