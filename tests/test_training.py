"""The bundled trainer: learning, the registered card, resume, interruption, DDP, splits and data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_hubmap.errors import HubmapInputError
from napari_hubmap.progress import Cancelled
from napari_hubmap.registry import list_models, load_model, read_card
from napari_hubmap.training import TrainConfig, load_sources, train
from napari_hubmap.training.checkpoint import checkpoint_folder
from napari_hubmap.training.loop import starting_card
from napari_hubmap.training.losses import LOSS_FUNCTIONS
from napari_hubmap.training.sampling import TileSampler
from napari_hubmap.training.sizes import floor_choices_px, object_floor_um2
from napari_hubmap.training.validate import MIN_OBJECT_PX, tta_picks
from napari_hubmap.training.split import split_samples

from training_data import write_disc_folder

CLI = [sys.executable, "-m", "napari_hubmap.cli"]


def tiny(**changes) -> TrainConfig:
    settings = dict(preset="effnet-unet", tile=64, infer_tile=64, epochs=3, samples_per_epoch=8, batch=4,
                    workers=0, lr=3e-3, warmup_epochs=0.5, val_groups=["pC"], thresholds=[0.3, 0.5, 0.7],
                    target_mpp=2.0, positive_fraction=0.6, select_by="dice")
    return TrainConfig(**{**settings, **changes})


@pytest.fixture
def data(tmp_path):
    return write_disc_folder(tmp_path / "discs")


def state_of(folder: Path) -> dict:
    return {k: v.clone() for k, v in load_model(folder).module.state_dict().items()}


def test_short_run_lowers_loss_and_registers_a_complete_card(tmp_path, data):
    events = []
    result = train(tiny(epochs=6, samples_per_epoch=16), [data], tmp_path / "m", progress=lambda p: events.append(p.details))
    epochs = [e for e in events if e["event"] == "epoch"]
    assert len(epochs) == 6 and events[0]["event"] == "start" and events[0]["val_images"] == 2
    assert epochs[-1]["train_loss"] < 0.8 * epochs[0]["train_loss"]
    card = read_card(tmp_path / "m")
    assert card.architecture == "Unet" and card.encoder == "efficientnet-b0" and card.parent is None
    assert card.threshold in (0.3, 0.5, 0.7) and card.weights_sha256 and card.target_mpp == 2.0
    val = card.metrics["validation"]
    # easy data (bright discs on a plain ground): six epochs find them (0.97 / 1.0 measured; a model that
    # learnt nothing scores near 0, one that marks everything about 0.2)
    assert val["dice"] >= 0.8 and val["object_f1"] >= 0.8 and val["threshold"] == card.threshold
    assert val["dice"] == max(e["val_dice"] for e in epochs)  # the best epoch is what was saved
    td = card.training_data
    assert len(td["manifest_sha256"]) == 64 and td["config"]["tile"] == 64 and td["config"]["loss"] == "bce_dice"
    assert sorted(td["validation_images"]) == ["discs/pC_2", "discs/pC_5"] and len(td["train_images"]) == 4
    assert td["sources"]["discs"]["images"] == 6
    train_samples = [s for s in load_sources([data], downscale=4.0, target_mpp=2.0) if s.name in td["train_images"]]
    choices = floor_choices_px(object_floor_um2(train_samples, 2.0), 2.0, MIN_OBJECT_PX)  # from its training glomeruli
    assert card.min_object_um2 == choices[val["min_size_px"]] > 0  # the one its validation images picked
    assert card.outline_threshold == val["outline_threshold"] and "outline_dice" in val  # picked there as well
    loaded = load_model(tmp_path / "m")
    assert loaded.module(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    assert not checkpoint_folder(tmp_path / "m").exists() and result.epochs_run == 6  # returned: not cancelled
    # the saved weights' flips and d4 picks, on the same validation images, objects under the same floor dropped
    val_samples = [s for s in load_sources([data], downscale=4.0, target_mpp=2.0) if s.name in td["validation_images"]]
    assert card.tta_picks == tta_picks(loaded.module, val_samples, card.normalization, torch.device("cpu"),
                                       [0.3, 0.5, 0.7], val["min_size_px"])
    assert set(card.tta_picks) == {"flips", "d4"} and all(p["threshold"] in (0.3, 0.5, 0.7) for p in card.tta_picks.values())


def test_select_by_object_f1_saves_the_epoch_with_the_best_glomerulus_f1(tmp_path, data):
    events = []
    train(tiny(epochs=4, samples_per_epoch=16, select_by="object_f1"), [data], tmp_path / "m",
          progress=lambda p: events.append(p.details))
    epochs = [e for e in events if e["event"] == "epoch"]
    best = max(epochs, key=lambda e: (e["val_object_f1"], e["val_dice"]))
    card = read_card(tmp_path / "m")
    assert card.training_data["epoch"] == best["epoch"] and card.metrics["validation"]["object_f1"] == best["val_object_f1"]
    assert [e["best"] for e in epochs][best["epoch"] - 1] is True
    assert card.training_data["config"]["select_by"] == "object_f1"
    with pytest.raises(HubmapInputError, match="select_by"):
        tiny(select_by="loss")


def test_fine_tuning_records_the_parent(tmp_path, data):
    train(tiny(epochs=1), [data], tmp_path / "first")
    result = train(tiny(epochs=1, preset=None, base=str(tmp_path / "first")), [data], tmp_path / "second")
    assert result.card.parent == read_card(tmp_path / "first").name and result.card.architecture == "Unet"
    # the base's test-time augmentation picks belong to its weights: the new card starts without them
    first = read_card(tmp_path / "first")
    assert set(first.tta_picks) == {"flips", "d4"}
    card, _ = starting_card(tiny(preset=None, base=str(tmp_path / "first")), tmp_path / "third")
    assert card.tta_picks == {} and card.threshold == first.threshold


def test_resume_continues_from_the_last_checkpoint_exactly(tmp_path, data):
    config = tiny(epochs=2)
    train(config, [data], tmp_path / "straight")
    steps = []
    cancel = threading.Event()

    def cancel_after_three(progress) -> None:
        if progress.details["event"] == "step":
            steps.append(progress.details)
        if len(steps) >= 3:
            cancel.set()

    with pytest.raises(Cancelled):
        train(config, [data], tmp_path / "resumed", progress=cancel_after_three, cancel=cancel)
    assert checkpoint_folder(tmp_path / "resumed").is_dir()
    saved = json.loads((checkpoint_folder(tmp_path / "resumed") / "state.json").read_text())
    assert (saved["epoch"], saved["step_in_epoch"]) == (1, 1)
    load_model(tmp_path / "resumed")  # epoch 1's best is registered and loads
    events = []
    second = train(config, [data], tmp_path / "resumed", progress=lambda p: events.append(p.details))
    assert events[0]["resumed_at"] == 1 and [e["step"] for e in events if e["event"] == "step"] == [2]
    assert second.epochs_run == 2  # returned: not cancelled
    a, b = state_of(tmp_path / "straight"), state_of(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_other_settings(tmp_path, data):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        train(tiny(epochs=2), [data], tmp_path / "m", cancel=cancel)
    with pytest.raises(HubmapInputError, match="other settings.*lr"):
        train(tiny(epochs=2, lr=1e-2), [data], tmp_path / "m")
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "notes.txt").write_text("keep me")
    with pytest.raises(HubmapInputError, match="already exists"):
        train(tiny(epochs=2), [data], tmp_path / "users")
    assert (tmp_path / "users" / "notes.txt").read_text() == "keep me"


def test_colour_augment_is_a_checked_setting_and_old_checkpoints_still_resume(tmp_path, data):
    """The setting is validated, recorded with the run, and a checkpoint written before it existed (no
    ``colour_augment`` in its settings) resumes as the default, while one of another value is refused."""
    with pytest.raises(HubmapInputError, match="colour_augment must be one of standard, stain, strong"):
        tiny(colour_augment="loud")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        train(tiny(epochs=1), [data], tmp_path / "m", cancel=cancel)
    state_file = checkpoint_folder(tmp_path / "m") / "state.json"
    state = json.loads(state_file.read_text())
    assert state["config"]["colour_augment"] == "standard"
    del state["config"]["colour_augment"]  # as written before the setting existed
    state_file.write_text(json.dumps(state))
    with pytest.raises(HubmapInputError, match="other settings.*colour_augment"):
        train(tiny(epochs=1, colour_augment="strong"), [data], tmp_path / "m")
    result = train(tiny(epochs=1), [data], tmp_path / "m")
    assert result.epochs_run == 1
    assert read_card(tmp_path / "m").training_data["config"]["colour_augment"] == "standard"


def _run_until(command, stop_when, timeout=240):
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    lines = []
    try:
        for line in process.stdout:
            if line.startswith("{"):
                lines.append(json.loads(line))
                if stop_when(lines[-1]):
                    break
    except BaseException:  # the caller never gets the process to stop: stop it here, and let the error show
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
        raise
    return process, lines


def test_killed_run_leaves_a_loadable_registry_and_resumes(tmp_path, data, monkeypatch):
    out = tmp_path / "models" / "killed"
    command = [*CLI, "train", "--data", str(data), "--out", str(out), "--epochs", "3", "--samples-per-epoch", "8",
               "--batch", "4", "--tile", "64", "--infer-tile", "64", "--workers", "0", "--val-groups", "pC", "--events"]
    process, lines = _run_until(command, lambda e: e["event"] == "step" and e["epoch"] == 2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    assert load_model(out).card.metrics["validation"]["epoch"] == 1
    stale_lock = out.parent / f".{out.name}.lock"  # the dead trainer's lock file (napari_hubmap.locks), taken over below
    assert [p.name for p in out.parent.iterdir()] and all(not p.name.startswith(".") or p == stale_lock
                                                          for p in out.parent.iterdir())  # no half-written temporaries
    monkeypatch.setenv("NAPARI_HUBMAP_MODELS", str(out.parent))
    assert [card.name for card, _ in list_models() if card.name == "killed"] == ["killed"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0, done.stderr[-2000:]
    assert events[0]["resumed_at"] == 1 and events[-1]["event"] == "done" and events[-1]["epochs_run"] == 3
    assert not stale_lock.exists()  # taken over, then released by the run that finished


def test_sigterm_cancels_with_a_checkpoint(tmp_path, data):
    out = tmp_path / "m"
    command = [*CLI, "train", "--data", str(data), "--out", str(out), "--epochs", "50", "--samples-per-epoch", "8",
               "--batch", "4", "--tile", "64", "--workers", "0", "--events"]
    process, lines = _run_until(command, lambda e: e["event"] == "step" and e["step"] >= 1)
    process.terminate()
    rest, _ = process.communicate(timeout=60)
    events = [json.loads(line) for line in rest.splitlines() if line.startswith("{")]
    assert process.returncode == 130 and events[-1]["event"] == "cancelled"
    assert Path(events[-1]["checkpoint"]) == checkpoint_folder(out) and checkpoint_folder(out).is_dir()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_process_group_cancels_with_a_checkpoint_not_a_crash(tmp_path, data, signum):
    """Ctrl-C in a terminal, ``kill -- -PGID`` or a batch scheduler's preemption signal the trainer and its
    loader workers at once: the workers leave it to the trainer, which saves its checkpoint and stops them."""
    out = tmp_path / "m"
    command = [*CLI, "train", "--data", str(data), "--out", str(out), "--epochs", "50", "--samples-per-epoch", "32",
               "--batch", "4", "--tile", "64", "--workers", "1", "--events"]
    process, lines = _run_until(command, lambda e: e["event"] == "step" and e["step"] >= 2)
    os.killpg(process.pid, signum)
    rest, errors = process.communicate(timeout=60)
    events = [json.loads(line) for line in rest.splitlines() if line.startswith("{")]
    assert process.returncode == 130 and events[-1]["event"] == "cancelled", errors[-2000:]
    assert "Traceback" not in errors and checkpoint_folder(out).is_dir()


@pytest.mark.slow
def test_ddp_with_two_cpu_processes_trains_and_ranks_agree(tmp_path, data):
    out = tmp_path / "ddp"
    command = [*CLI, "train", "--data", str(data), "--out", str(out), "--epochs", "2", "--samples-per-epoch", "16",
               "--batch", "4", "--tile", "64", "--infer-tile", "64", "--workers", "0", "--val-groups", "pC",
               "--nproc", "2", "--events"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    start, final = events[0], events[-1]
    assert start["world"] == 2 and start["steps_per_epoch"] == 2  # 16 samples / (4 per step x 2 ranks)
    assert final["event"] == "done" and len(final["rank_digests"]) == 2
    assert final["rank_digests"][0] == final["rank_digests"][1]
    assert sum(e["event"] == "epoch" for e in events) == 2  # rank 0 alone reports
    load_model(out)


def test_cli_bad_input_is_one_line_exit_2(tmp_path, data):
    for args, needle in [(["--data", str(tmp_path / "missing")], "training data folder not found"),
                         (["--data", str(data), "--val-groups", "nobody"], "nobody"),
                         (["--data", str(data), "--tile", "50"], "multiples of 32")]:
        done = subprocess.run([*CLI, "train", *args, "--out", str(tmp_path / "x"), "--epochs", "1"],
                              capture_output=True, text=True, timeout=120)
        errors = [line for line in done.stderr.splitlines() if "napari-hubmap" in line]
        assert done.returncode == 2 and len(errors) == 1 and needle in errors[0], done.stderr
        assert not (tmp_path / "x").exists()


def test_split_keeps_patients_together_and_folds_cover_all(data):
    samples = load_sources([data], downscale=1, target_mpp=None)
    train_set, val = split_samples(samples, tiny(val_groups=["pB"]))
    assert {s.group for s in val} == {"pB"} and "pB" not in {s.group for s in train_set}
    held = []
    for fold in range(3):
        train_set, val = split_samples(samples, tiny(val_groups=[], folds=3, fold=fold))
        assert not {s.group for s in val} & {s.group for s in train_set}
        held += [s.name for s in val]
    assert sorted(held) == sorted(s.name for s in samples)


def test_excluded_groups_and_images_are_neither_trained_nor_validated(data):
    samples = load_sources([data], downscale=1, target_mpp=None)
    one_image = next(s.name for s in samples if s.group == "pA")
    train_set, val = split_samples(samples, tiny(val_groups=["pC"], exclude_groups=["pB", one_image]))
    kept = {s.name for s in train_set} | {s.name for s in val}
    assert not any(s.group == "pB" for s in train_set + val) and one_image not in kept
    assert kept == {s.name for s in samples if s.group != "pB" and s.name != one_image}
    with pytest.raises(HubmapInputError, match="excluded group.*nobody"):
        split_samples(samples, tiny(exclude_groups=["nobody"]))


def test_sources_scale_to_the_working_mpp(tmp_path, data):
    samples = load_sources([data], downscale=1, target_mpp=4.0)  # dataset.json says 2 µm/px
    assert samples[0].image.shape == (48, 48, 3) and samples[0].mask.shape == (48, 48)
    assert set(np.unique(samples[0].mask)) <= {0, 1}
    samples = load_sources([data], downscale=1, target_mpp=4.0, mpp_overrides={"discs": 4.0})
    assert samples[0].image.shape == (96, 96, 3)


def test_one_image_can_have_its_own_mpp(data):
    names = [s.name for s in load_sources([data], downscale=1, target_mpp=None)]
    first, other = names[0], names[1]
    samples = {s.name: s for s in load_sources([data], downscale=1, target_mpp=4.0,
                                               mpp_overrides={"discs": 4.0, first: 1.0})}
    assert samples[first].image.shape == (24, 24, 3) and samples[first].mask.shape == (24, 24)
    assert samples[first].mask.any()  # its discs shrink with it
    assert samples[other].image.shape == (96, 96, 3)  # the folder's µm/px


def test_cli_reads_an_mpp_file_and_refuses_a_bad_one(tmp_path, data):
    from napari_hubmap.cli.train import _mpp_file, _mpp_overrides

    table = tmp_path / "mpp.json"
    table.write_text(json.dumps({"discs": 4.0, "discs/pA_0": 1.0}))
    assert _mpp_overrides(["discs=3"], _mpp_file(table)) == {"discs": 3.0, "discs/pA_0": 1.0}
    table.write_text(json.dumps({"discs": -1}))
    done = subprocess.run([*CLI, "train", "--data", str(data), "--mpp-file", str(table), "--out", str(tmp_path / "x"),
                           "--epochs", "1"], capture_output=True, text=True, timeout=120)
    errors = [line for line in done.stderr.splitlines() if "napari-hubmap" in line]
    assert done.returncode == 2 and len(errors) == 1 and "mpp.json" in errors[0], done.stderr
    assert not (tmp_path / "x").exists()


def test_sampler_prefers_glomeruli_but_keeps_empty_tissue(data):
    """With ``positive_fraction`` p, a share p of tiles is centred on a glomerulus and the rest drawn
    uniformly, so the share holding glomerulus pixels is p + (1 - p) u, u the uniform rate measured on the
    same data (a sampler that ignores p gives u; one that never draws empty tissue gives 1)."""
    samples = load_sources([data], downscale=1, target_mpp=None)

    def share_with_glomeruli(fraction: float, draws: int = 800) -> float:
        sampler, rng = TileSampler(samples, 32, positive_fraction=fraction), np.random.default_rng(0)
        return float(np.mean([sampler.draw(rng)[1].any() for _ in range(draws)]))

    uniform = share_with_glomeruli(0.0)
    assert 0.2 < uniform < 0.9  # the data leaves room to tell the two apart
    assert share_with_glomeruli(0.5) == pytest.approx(0.5 + 0.5 * uniform, abs=0.06)
    assert share_with_glomeruli(1.0, draws=200) == 1.0


def test_dropped_tiles_never_reach_the_loader(tmp_path):
    from napari_hubmap.project import add_slide, init_project
    from napari_hubmap.project.review import set_state
    from napari_hubmap.project.manifest import Project

    from test_project_manifest import make_inputs

    inputs = make_inputs(tmp_path / "inputs")
    project = init_project(tmp_path / "project", tile=128, downscale=1)
    add_slide(project, inputs["slide"], ground_truth=inputs["gt"], predictions=[inputs["prob"]])
    everything = load_sources([tmp_path / "project"], downscale=1, target_mpp=None)
    dropped = everything[1].name.split("/", 1)[1]
    set_state(Project.open(tmp_path / "project"), "kidney", dropped, "dropped")
    kept = load_sources([tmp_path / "project"], downscale=1, target_mpp=None)
    assert len(kept) == len(everything) - 1 and f"kidney/{dropped}" not in {s.name for s in kept}
    sampler = TileSampler(kept, 64, positive_fraction=0.5)
    rng = np.random.default_rng(1)
    drawn = {sampler.names[sampler.draw(rng)[2]] for _ in range(200)}
    assert f"kidney/{dropped}" not in drawn and drawn <= {s.name for s in kept}
    original = {s.name: s for s in everything}
    for s in kept:  # the pixels are the slide's and the labels its ground truth
        assert np.array_equal(s.image, original[s.name].image) and np.array_equal(s.mask, original[s.name].mask)


@pytest.mark.parametrize("name", sorted(LOSS_FUNCTIONS))
def test_losses_prefer_the_right_answer(name):
    target = (torch.rand(2, 1, 32, 32) > 0.7).float()
    right = (target * 2 - 1) * 4
    wrong = -right
    loss = LOSS_FUNCTIONS[name]
    assert loss(right, target) < loss(torch.zeros_like(right), target) < loss(wrong, target)


def test_sampler_balances_sources(tmp_path):
    small = write_disc_folder(tmp_path / "small", count=3, size=64)
    large = write_disc_folder(tmp_path / "large", count=3, size=256, seed=1)
    samples = load_sources([small, large], downscale=1, target_mpp=None)
    sampler = TileSampler(samples, 32, positive_fraction=0.0)
    rng = np.random.default_rng(0)
    drawn = [samples[sampler.draw(rng)[2]].source for _ in range(400)]
    assert 0.4 < drawn.count("small") / len(drawn) < 0.6  # by area alone it would be 1/17


def test_validation_dice_weighs_each_source_once():
    from napari_hubmap.training.sources import Sample
    from napari_hubmap.training.validate import validation_scores

    class FromRed(torch.nn.Module):  # logit +10 where the red channel is high, else -10
        def forward(self, x):
            return torch.where(x[:, :1] > 0, 10.0, -10.0)

    def sample(source, size, right):
        mask = np.zeros((size, size), np.uint8)
        mask[: size // 2] = 1
        image = np.zeros((size, size, 3), np.uint8)
        image[..., 0] = 255 * (mask if right else 1 - mask)
        return Sample(f"{source}/x", source, source, image, mask)

    norm = {"mean": [0.5] * 3, "std": [0.25] * 3, "max_pixel_value": 255.0}
    scores = validation_scores(FromRed(), [sample("big", 256, True), sample("small", 32, False)], norm,
                               torch.device("cpu"), [0.5])
    assert scores["by_source"]["big"]["dice"] > 0.99 and scores["by_source"]["small"]["dice"] < 0.01
    assert abs(scores["dice"] - 0.5) < 0.01 and scores["dice_pooled"] > 0.98

    empty = sample("empty", 32, True)
    empty.mask[:] = 0  # a source with no glomerulus to find: its speck of red is a false positive
    scores = validation_scores(FromRed(), [sample("big", 256, True), empty], norm, torch.device("cpu"), [0.5])
    assert scores["by_source"]["empty"]["dice"] < 0.01 and scores["dice"] > 0.99  # it does not outvote "big"


def _disc_batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Four 32 px images with one bright disc each on a dim noisy ground, and their masks."""
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    centres = torch.randint(8, 24, (4, 2), generator=generator).float()
    radii = torch.randint(4, 8, (4,), generator=generator).float()
    masks = torch.stack([((yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r**2).float() for c, r in zip(centres, radii)])[:, None]
    noise = 0.15 * torch.randn(4, 3, 32, 32, generator=generator)
    return masks.expand(-1, 3, -1, -1) * 0.6 + 0.2 + noise, masks


@pytest.mark.parametrize("name", sorted(LOSS_FUNCTIONS))
def test_each_loss_trains_a_small_network_to_find_discs(name):
    """Eighty steps of Adam on each loss: it falls and the network's masks, at the best of the trainer's
    thresholds, reach Dice 0.9 on new discs (measured 0.99 each; a loss with a wrong sign or a detached
    gradient leaves the network at chance, about 0.2)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 3, padding=1))
    optimiser = torch.optim.Adam(network.parameters(), lr=0.01)
    loss = LOSS_FUNCTIONS[name]
    losses = []
    for _ in range(80):
        images, masks = _disc_batch(generator)
        value = loss(network(images), masks)
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        losses.append(value.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    images, masks = _disc_batch(generator)
    with torch.no_grad():
        probability = torch.sigmoid(network(images))
    dice = max(float(2 * ((probability > t) * masks).sum() / ((probability > t).sum() + masks.sum())) for t in (0.3, 0.5, 0.7))
    assert dice >= 0.9, dice
