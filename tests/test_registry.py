"""Model registry: cards, model folders, safe loading, legacy checkpoint import (tiny models, no network)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_hubmap.errors import HubmapInputError
from napari_hubmap.registry import (
    FORMAT_VERSION,
    LoadedModel,
    ModelCard,
    build_module,
    find_model,
    import_checkpoint,
    list_models,
    load_model,
    model_search_path,
    save_model,
    update_card,
)
from napari_hubmap.registry.store import repository_models_folder
from napari_hubmap.registry.weights import state_dict_for_saving

TINY_UNET = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection (a weight download) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def isolated_search_path(tmp_path, monkeypatch):
    """No user models: an empty XDG data folder and no NAPARI_HUBMAP_MODELS."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("NAPARI_HUBMAP_MODELS", raising=False)


def tiny_card(name="tiny", **fields) -> ModelCard:
    """A ~80k-parameter Unet on timm's test ResNet (depth 3)."""
    fields.setdefault("architecture_kwargs", dict(TINY_UNET))
    return ModelCard(name=name, architecture="Unet", encoder="tu-test_resnet", **fields)


def tiny_model(card: ModelCard | None = None, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_module(card or tiny_card()).eval()


@pytest.fixture
def saved(tmp_path) -> tuple[torch.nn.Module, Path]:
    """A tiny model saved as ``tmp_path/models/tiny``."""
    card = tiny_card()
    module = tiny_model(card)
    return module, save_model(module, card, tmp_path / "models" / "tiny")


def outputs(module: torch.nn.Module, seed: int = 1) -> torch.Tensor:
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return module.eval()(x)


def rewrite_card(folder: Path, **changes) -> None:
    data = json.loads((folder / "card.json").read_text())
    data.update(changes)
    (folder / "card.json").write_text(json.dumps(data))


# --- save / load ---------------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_outputs(saved):
    module, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "model.safetensors"]
    loaded = load_model(folder)
    assert isinstance(loaded, LoadedModel)
    assert loaded.path == folder and not loaded.module.training
    assert len(loaded.card.weights_sha256) == 64
    assert torch.equal(outputs(module), outputs(loaded.module))


def test_save_leaves_no_temporary_and_overwrites_a_model_folder(saved):
    module, folder = saved
    save_model(tiny_model(seed=5), tiny_card(), folder)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny"]
    assert not torch.equal(outputs(module), outputs(load_model(folder).module))


def test_update_card_rewrites_the_card_alone_and_refuses_other_weights(saved):
    """A pick made after training (threshold, TTA picks) changes the card, not the 25 MB of weights: the weights
    file stays the same file (same inode, same bytes) and the model loads with the new card; a card that names
    other weights is refused and the folder is left as it was."""
    module, folder = saved
    weights = folder / "model.safetensors"
    before = (weights.stat().st_ino, weights.read_bytes())
    card = load_model(folder).card
    assert update_card(folder, card.replace(threshold=0.7, tta_picks={"flips": {"threshold": 0.45, "outline_threshold": None}})) == folder / "card.json"
    assert (weights.stat().st_ino, weights.read_bytes()) == before
    loaded = load_model(folder)
    assert loaded.card.threshold == 0.7 and loaded.card.tta_picks == {"flips": {"threshold": 0.45, "outline_threshold": None}}
    assert torch.equal(outputs(module), outputs(loaded.module))
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny"]  # no temporary left beside it
    text = (folder / "card.json").read_text()
    with pytest.raises(HubmapInputError, match="other weights"):
        update_card(folder, card.replace(weights_sha256="0" * 64))
    assert (folder / "card.json").read_text() == text
    with pytest.raises(HubmapInputError, match="not a model folder"):
        update_card(folder.parent / "missing", card)


def test_save_refuses_to_replace_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(HubmapInputError, match="refusing to overwrite"):
        save_model(tiny_model(), tiny_card(), tmp_path / "photos")
    assert (tmp_path / "photos" / "cat.jpg").exists()


def test_save_refuses_a_module_that_does_not_match_the_card(tmp_path):
    with pytest.raises(HubmapInputError, match="does not match the card.*segmentation_head"):
        save_model(tiny_model(), tiny_card(classes=2), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_shared_tensors_are_saved_as_separate_copies(tmp_path):
    from safetensors.torch import load_file, save_file

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 4)
            self.b = torch.nn.Linear(4, 4)
            self.b.weight = self.a.weight

    state = state_dict_for_saving(Tied())
    assert state["a.weight"].data_ptr() != state["b.weight"].data_ptr()
    assert torch.equal(state["a.weight"], state["b.weight"])
    path = tmp_path / "tied.safetensors"
    save_file(state, str(path))
    Tied().load_state_dict(load_file(str(path)), strict=True)


# --- finding models ------------------------------------------------------------------------------


def test_load_by_name_via_env(saved, monkeypatch, tmp_path):
    module, folder = saved
    monkeypatch.setenv("NAPARI_HUBMAP_MODELS", str(tmp_path / "elsewhere") + ":" + str(folder.parent))
    assert find_model("tiny") == folder
    assert torch.equal(outputs(module), outputs(load_model("tiny").module))


def test_find_model_accepts_the_card_file_path(saved):
    _, folder = saved
    assert find_model(folder / "card.json") == folder
    assert find_model(str(folder)) == folder


def test_search_order_env_then_user_then_bundled(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    monkeypatch.setenv("NAPARI_HUBMAP_MODELS", f"{first}:{second}")
    user = tmp_path / "xdg" / "napari-hubmap" / "models"
    assert model_search_path() == [first, second, user]  # tests hide the bundled models (conftest)
    monkeypatch.setenv("NAPARI_HUBMAP_BUNDLED_MODELS", str(tmp_path / "shipped"))
    assert model_search_path() == [first, second, user, tmp_path / "shipped"]
    monkeypatch.delenv("NAPARI_HUBMAP_BUNDLED_MODELS")
    repository = repository_models_folder()
    assert model_search_path()[3:] == ([repository] if repository.is_dir() else [])
    monkeypatch.setenv("NAPARI_HUBMAP_BUNDLED_MODELS", "")

    for root, seed in ((second, 1), (user, 2), (first, 3)):
        save_model(tiny_model(seed=seed), tiny_card(notes=root.name), root / "tiny")
    assert find_model("tiny") == first / "tiny"
    assert [card.notes for card, _ in list_models()] == ["first"]  # later ones are shadowed
    monkeypatch.delenv("NAPARI_HUBMAP_MODELS")
    assert find_model("tiny") == user / "tiny"


def test_find_by_card_name_when_the_folder_is_named_otherwise(tmp_path, monkeypatch):
    save_model(tiny_model(), tiny_card(name="glom-unet"), tmp_path / "v3")
    monkeypatch.setenv("NAPARI_HUBMAP_MODELS", str(tmp_path))
    assert find_model("glom-unet") == tmp_path / "v3"


def test_unknown_name_lists_available_models(saved, monkeypatch):
    _, folder = saved
    monkeypatch.setenv("NAPARI_HUBMAP_MODELS", str(folder.parent))
    with pytest.raises(HubmapInputError, match=r"^nope: no model of that name \(available: tiny;"):
        find_model("nope")
    with pytest.raises(HubmapInputError, match="no such model folder"):
        find_model(str(folder.parent / "nope"))


def test_list_models_skips_broken_folders_with_a_warning(saved, monkeypatch):
    _, folder = saved
    broken = folder.parent / "broken"
    broken.mkdir()
    (broken / "card.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"")
    (folder.parent / "unrelated").mkdir()
    monkeypatch.setenv("NAPARI_HUBMAP_MODELS", str(folder.parent))
    with pytest.warns(UserWarning, match="broken.*not valid JSON"):
        models = list_models()
    assert [(card.name, path) for card, path in models] == [("tiny", folder)]


# --- bad model folders ---------------------------------------------------------------------------


def test_sha_mismatch_is_an_error(saved):
    _, folder = saved
    rewrite_card(folder, weights_sha256="0" * 64)
    with pytest.raises(HubmapInputError, match=r"model\.safetensors: sha256 .* does not match"):
        load_model(folder)


def test_card_weights_mismatch_names_the_weights_file(saved):
    _, folder = saved
    rewrite_card(folder, classes=2)
    with pytest.raises(HubmapInputError) as caught:
        load_model(folder)
    message = str(caught.value)
    assert message.startswith(str(folder / "model.safetensors") + ": weights do not match the card")
    assert "classes=2" in message and "shape mismatch" in message and "segmentation_head" in message
    assert "\n" not in message


def test_other_architecture_mismatch_summarises_keys(saved):
    _, folder = saved
    rewrite_card(folder, architecture="FPN", architecture_kwargs={"encoder_depth": 3})
    with pytest.raises(HubmapInputError, match=r"missing keys \(.*, \.\.\.\), \d+ unexpected keys"):
        load_model(folder)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "pickle"])
def test_corrupt_safetensors_is_a_clear_error(saved, damage):
    _, folder = saved
    weights = folder / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "garbage":
        weights.write_bytes(b"\x00" * 64)
    else:
        torch.save({"a": torch.zeros(1)}, weights)
    rewrite_card(folder, weights_sha256="")
    with pytest.raises(HubmapInputError, match=r"model\.safetensors: not a readable safetensors file"):
        load_model(folder)


def test_missing_card_or_weights_is_a_clear_error(saved):
    _, folder = saved
    (folder / "card.json").unlink()
    with pytest.raises(HubmapInputError, match="incomplete model folder: missing card.json"):
        load_model(folder)


def test_unknown_encoder_error_names_the_card(saved):
    _, folder = saved
    rewrite_card(folder, encoder="resnet_nope", architecture_kwargs={})
    with pytest.raises(HubmapInputError, match=r"card\.json: cannot build Unet with encoder 'resnet_nope'"):
        load_model(folder)


# --- the card ------------------------------------------------------------------------------------


def test_card_json_round_trip():
    card = tiny_card(target_mpp=1.0, metrics={"dice": 0.93}, training_data={"slides": ["a", "b"]}, parent="v1")
    text = card.to_json()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert ModelCard.from_json(text, source="card.json") == card


def test_card_normalises_names_and_numbers():
    card = ModelCard(name="m", architecture="deeplabv3plus", encoder="resnet18", downscale=4, threshold=1,
                     normalization={"mean": 0.5, "std": [0.25], "max_pixel_value": 255})
    assert card.architecture == "DeepLabV3Plus"
    assert card.downscale == 4.0 and isinstance(card.downscale, float)
    assert card.normalization == {"mean": [0.5] * 3, "std": [0.25] * 3, "max_pixel_value": 255.0}


def card_text(**changes) -> str:
    data = json.loads(tiny_card().to_json())
    data.update(changes)
    return json.dumps(data)


@pytest.mark.parametrize(
    "text, problem",
    [
        (card_text(classes="2"), r"card field 'classes': expected an integer, got str '2'"),
        (card_text(tile=512.0), r"card field 'tile': expected an integer"),
        (card_text(downscale=True), r"card field 'downscale': expected a number, got bool"),
        (card_text(architecture="UNetX"), r"card field 'architecture': unknown architecture 'UNetX' \(known: .*Unet"),
        (card_text(format_version=FORMAT_VERSION + 1), r"format_version 2 is newer than this napari-hubmap supports \(1\)"),
        (card_text(treshold=0.4), r"unknown card field\(s\) 'treshold'"),
        (card_text(output="sigmoid"), r"card field 'output': must be one of logits, probabilities"),
        (card_text(overlap=512), r"card field 'overlap': must be >= 0 and < tile"),
        (card_text(architecture_kwargs={"encoder_weights": "imagenet"}), r"encoder_weights set by the card"),
        (card_text(normalization={"mean": [0.5]}), r"card field 'normalization': needs exactly the keys"),
        (card_text(created="yesterday"), r"card field 'created': not an ISO 8601 time"),
        ('{"name": "x", "architecture": "Unet"}', r"missing required field\(s\) 'encoder'"),
        ("[1, 2]", r"must be a JSON object, got list"),
        ("{oops", r"model card is not valid JSON"),
    ],
)
def test_card_validation_errors_name_the_file_and_field(text, problem):
    with pytest.raises(HubmapInputError, match=r"^models/x/card\.json: .*" + problem):
        ModelCard.from_json(text, source="models/x/card.json")


def test_misspelt_architecture_option_is_caught_for_smp_encoders():
    with pytest.raises(HubmapInputError, match=r"unknown option\(s\) 'decoder_chanels' for Unet"):
        ModelCard(name="m", architecture="Unet", encoder="resnet18", architecture_kwargs={"decoder_chanels": [8]})


def test_activation_requires_probability_output():
    with pytest.raises(HubmapInputError, match="set output to 'probabilities'"):
        tiny_card(architecture_kwargs={**TINY_UNET, "activation": "sigmoid"})
    card = tiny_card(architecture_kwargs={**TINY_UNET, "activation": "sigmoid"}, output="probabilities")
    assert card.output == "probabilities"
    torch.manual_seed(0)
    out = build_module(card).eval()(torch.randn(1, 3, 64, 64) * 5).detach()
    assert out.min() >= 0 and out.max() <= 1 and out.std() > 0  # the network ends in the sigmoid it declares


def test_working_downscale_prefers_target_mpp_when_slide_mpp_known():
    assert tiny_card().working_downscale(0.5) == 2.0
    card = tiny_card(downscale=3, target_mpp=1.0)
    assert card.working_downscale(0.5) == 2.0
    assert card.working_downscale(0.25) == 4.0
    assert card.working_downscale(None) == 3.0


# --- architectures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "architecture, encoder, kwargs",
    [
        ("Unet", "resnet18", {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}),
        ("FPN", "tu-test_efficientnet", {"encoder_depth": 3, "decoder_pyramid_channels": 16, "decoder_segmentation_channels": 32, "upsampling": 1}),
        ("DeepLabV3Plus", "tu-test_resnet", {"encoder_depth": 3, "decoder_channels": 16}),
        ("UnetPlusPlus", "tu-test_resnet", {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}),
        ("UPerNet", "tu-test_efficientnet", {"decoder_channels": 16}),
    ],
)
def test_architectures_build_offline_and_segment(architecture, encoder, kwargs):
    card = ModelCard(name="m", architecture=architecture, encoder=encoder, classes=2, architecture_kwargs=kwargs)
    module = build_module(card).eval()
    assert outputs(module).shape == (2, 2, 64, 64)


# --- legacy checkpoints --------------------------------------------------------------------------


def test_import_dataparallel_checkpoint_matches(tmp_path):
    module = tiny_model(seed=7)
    state = {f"module.{key}": value for key, value in module.state_dict().items()}
    checkpoint = tmp_path / "fold0.pth"
    torch.save({"state_dict": state, "epoch": 12, "best_dice": np.float64(0.91), "optimizer": {"lr": 1e-3}}, checkpoint)

    out = import_checkpoint(checkpoint, arch="Unet", encoder="tu-test_resnet", out=tmp_path / "fold0",
                            architecture_kwargs=TINY_UNET, downscale=4.0)
    loaded = load_model(out)
    assert loaded.card.name == "fold0" and loaded.card.downscale == 4.0
    assert "fold0.pth" in loaded.card.notes
    assert torch.equal(outputs(module), outputs(loaded.module))


@pytest.mark.parametrize("container, prefix", [(None, ""), ("model", "model."), ("net", "module.model.")])
def test_import_finds_the_state_dict_and_strips_prefixes(tmp_path, container, prefix):
    module = tiny_model(seed=3)
    state = {prefix + key: value for key, value in module.state_dict().items()}
    torch.save(state if container is None else {container: state}, tmp_path / "c.pt")
    out = import_checkpoint(tmp_path / "c.pt", arch="Unet", encoder="tu-test_resnet", out=tmp_path / "m",
                            name="imported", architecture_kwargs=TINY_UNET)
    loaded = load_model(out)
    assert loaded.card.name == "imported"
    assert torch.equal(outputs(module), outputs(loaded.module))


def test_import_mismatched_checkpoint_names_the_checkpoint(tmp_path):
    torch.save({"state_dict": tiny_model().state_dict()}, tmp_path / "c.pth")
    with pytest.raises(HubmapInputError, match=r"c\.pth: weights do not match the card .*classes=3"):
        import_checkpoint(tmp_path / "c.pth", arch="Unet", encoder="tu-test_resnet", out=tmp_path / "m",
                          classes=3, architecture_kwargs=TINY_UNET)
    assert not (tmp_path / "m").exists()


def test_import_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "c.pth").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(HubmapInputError, match=r"c\.pth: not a readable PyTorch checkpoint"):
        import_checkpoint(tmp_path / "c.pth", arch="Unet", encoder="tu-test_resnet", out=tmp_path / "m")


def _touch_marker(path: str) -> None:
    """What unpickling the malicious checkpoint would run."""
    Path(path).write_text("pwned")


class Malicious:
    """An object whose unpickling would execute code (here: create a marker file)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch_marker, (self.marker,))


def test_checkpoint_with_pickled_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "marker.txt"
    torch.save({"state_dict": tiny_model().state_dict(), "config": Malicious(marker)}, tmp_path / "evil.pth")
    assert not marker.exists()
    with pytest.raises(HubmapInputError) as caught:
        import_checkpoint(tmp_path / "evil.pth", arch="Unet", encoder="tu-test_resnet", out=tmp_path / "m",
                          architecture_kwargs=TINY_UNET)
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "evil.pth") + ": refused: the checkpoint holds pickled Python objects")
    assert "_touch_marker" in message and "weights_only=True" in message
    assert not marker.exists() and not (tmp_path / "m").exists()
