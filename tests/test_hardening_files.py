"""Files from strangers: crafted pickles never run, corrupt or mismatched files give one clear error, disk untouched."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path

import pytest
import torch

import tracetorch as tt
from tracetorch.builder import SpecError
from tracetorch.core.state_io import StateFileError, read_state_file
from tracetorch.training import CheckpointError, Trainer, evaluate_checkpoint, load_checkpoint
from tracetorch.training.checkpoint import latest_checkpoint


class Payload:
    """Unpickling this creates ``marker``: proof that the loader ran a stranger's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def spec(hidden: int) -> dict:
    return {"layers": [{"Linear": {"out_features": hidden}}, {"LIB": {}}, {"Linear": {"out_features": 2}}, {"LI": {}}]}


def config(run_dir: Path, hidden: int = 12, **trainer) -> dict:
    return {"seed": 0, "data": {"name": "poisson_clicks", "num_train": 48, "num_test": 16, "num_steps": 3, "batch_size": 16},
            "model": spec(hidden),
            "trainer": {"epochs": 1, "device": "cpu", "run_dir": str(run_dir), "plots": False, "progress": False, **trainer}}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    Trainer(config(run_dir)).fit()
    return run_dir


def copy_checkpoint(run: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "run"
    shutil.copytree(run, target)
    return latest_checkpoint(target)


def rewrite_manifest(checkpoint: Path) -> None:
    """What an attacker does: make the manifest match the swapped files."""
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    for name, meta in manifest["files"].items():
        data = (checkpoint / name).read_bytes()
        meta.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))


# ---- crafted pickles --------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_crafted_pickles_are_refused_by_every_loader_and_never_run(run, tmp_path):
    marker = tmp_path / "pwned"
    evil_pt = tmp_path / "states.pt"
    torch.save({"0.mem": Payload(marker)}, evil_pt)
    evil_raw = tmp_path / "raw.pt"
    evil_raw.write_bytes(pickle.dumps({"0.mem": Payload(marker)}))
    for path in (evil_pt, evil_raw):
        with pytest.raises(StateFileError, match=rf"^{re.escape(str(path))}: not a readable PyTorch \(weights_only\) state "
                           r"file \(UnpicklingError: "):
            read_state_file(path)
        with pytest.raises(StateFileError, match=rf"^{re.escape(str(path))}: not a readable PyTorch"):
            tt.Sequential(tt.snn.LIB(3)).load_states_file(path)
    # a checkpoint whose weights file is a pickle, with a manifest forged to match
    checkpoint = copy_checkpoint(run, tmp_path)
    (checkpoint / "model.safetensors").write_bytes(pickle.dumps({"0.weight": Payload(marker)}))
    rewrite_manifest(checkpoint)
    before = tree_digest(checkpoint.parent.parent)
    message = rf"^{re.escape(str(checkpoint / 'model.safetensors'))}: not a readable safetensors state file \("
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(checkpoint)
    with pytest.raises(CheckpointError, match=message):
        Trainer(config(checkpoint.parent.parent, resume=str(checkpoint)))
    with pytest.raises(CheckpointError, match=message):
        evaluate_checkpoint(checkpoint)
    # YAML that would construct Python objects: the checkpoint's config and model specs
    checkpoint = copy_checkpoint(run, tmp_path / "b")
    (checkpoint / "config.yaml").write_text(f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    rewrite_manifest(checkpoint)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(checkpoint / 'config.yaml'))}: not valid YAML "
                       r"\(ConstructorError: could not determine a constructor for the tag "
                       r"'tag:yaml.org,2002:python/object/apply:os.system'"):
        load_checkpoint(checkpoint)
    spec_file = tmp_path / "net.yaml"
    spec_file.write_text(f"layers:\n  - !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SpecError, match=r"could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:"):
        tt.build_model(spec_file)
    assert not marker.exists()
    assert tree_digest(tmp_path / "run") == before
    with open(evil_raw, "rb") as handle:  # the files really were dangerous to a plain unpickler
        pickle.load(handle)
    assert marker.exists()


# ---- corrupt files ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "damage", "message"), [
    ("model.safetensors", lambda b: b[: len(b) // 2], r"file model\.safetensors has \d+ bytes but the manifest says \d+ "
     r"\(truncated or modified\)$"),
    ("trainer.safetensors", lambda b: b"\x00" * 8 + b[8:], r"file trainer\.safetensors does not match its manifest entry "
     r"\(corrupt or modified\)$"),
    ("manifest.json", lambda b: b[:-10], r"manifest\.json: not valid JSON \("),
    ("manifest.json", lambda b: b.replace(b"tracetorch-checkpoint", b"other-format"), r"manifest\.json: not a "
     r"tracetorch-checkpoint v1 manifest$"),
])
def test_corrupt_checkpoint_is_one_clear_error_and_nothing_changes(run, tmp_path, name, damage, message):
    checkpoint = copy_checkpoint(run, tmp_path)
    (checkpoint / name).write_bytes(damage((checkpoint / name).read_bytes()))
    before = tree_digest(tmp_path / "run")
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(checkpoint))}(: |/){message}"):
        load_checkpoint(checkpoint)
    with pytest.raises(CheckpointError, match=re.escape(str(checkpoint))):
        Trainer(config(tmp_path / "run", resume=str(checkpoint)))
    assert tree_digest(tmp_path / "run") == before


@pytest.mark.parametrize(("name", "content", "kind"), [
    ("model.safetensors", b"PK\x03\x04 this is a zip, not safetensors", "safetensors"),
    ("states.safetensors", b"\xff" * 64, "safetensors"),
    ("trainer.safetensors", b"", "safetensors"),
])
def test_wrong_magic_bytes_even_with_a_forged_manifest(run, tmp_path, name, content, kind):
    checkpoint = copy_checkpoint(run, tmp_path)
    (checkpoint / name).write_bytes(content)
    rewrite_manifest(checkpoint)
    before = tree_digest(tmp_path / "run")
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(checkpoint / name))}: not a readable {kind} state file \("):
        load_checkpoint(checkpoint)
    assert tree_digest(tmp_path / "run") == before


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_state_file_with_wrong_magic_bytes(tmp_path, suffix):
    model = tt.Sequential(torch.nn.Linear(2, 3), tt.snn.LIB(3))
    model(torch.ones(2, 2))
    path = tmp_path / f"s{suffix}"
    model.save_states_file(path)
    data = bytearray(path.read_bytes())
    data[:4] = b"ELF\x7f"
    path.write_bytes(bytes(data))
    kind = "safetensors" if suffix == ".safetensors" else r"PyTorch \(weights_only\)"
    with pytest.raises(StateFileError, match=rf"^{re.escape(str(path))}: not a readable {kind} state file \("):
        model.load_states_file(path)
    assert path.read_bytes() == bytes(data)


# ---- mismatched files -----------------------------------------------------------------------


def test_checkpoint_of_a_different_model_config_names_file_shapes_and_config_keys(run, tmp_path):
    checkpoint = latest_checkpoint(run)
    before = tree_digest(run)
    with pytest.raises(CheckpointError) as info:
        Trainer(config(run, hidden=10, resume=str(checkpoint)))
    assert str(info.value) == (
        f"{checkpoint}: the checkpoint does not fit this model: wrong shapes: 0.weight [12, 2] in the checkpoint vs [10, 2] "
        "in the model, 0.bias [12] in the checkpoint vs [10] in the model, 1.raw_beta [12] in the checkpoint vs [10] in the "
        "model, 1.raw_threshold [12] in the checkpoint vs [10] in the model, 1.raw_bias [12] in the checkpoint vs [10] in "
        "the model, 2.weight [2, 12] in the checkpoint vs [2, 10] in the model (config differences, checkpoint vs this run: "
        "model.layers[0].Linear.out_features: 12 vs 10; model.layers[1].LIB.num_neurons: 12 vs 10; "
        "model.layers[2].Linear.in_features: 12 vs 10)"
    )
    other = spec(12)
    other["layers"][1] = {"LIT": {}}
    cfg = config(run, resume=str(checkpoint))
    cfg["model"] = other
    with pytest.raises(CheckpointError, match=re.escape(
        f"{checkpoint}: the checkpoint does not fit this model: missing weights: 1.raw_neg_threshold, 1.raw_pos_threshold; "
        "unexpected weights: 1.raw_threshold (config differences, checkpoint vs this run: model.layers[1].LIB: "
        "{'num_neurons': 12} vs '<absent>'; model.layers[1].LIT: '<absent>' vs {'num_neurons': 12})"
    )):
        Trainer(cfg)
    cfg = config(run, resume=str(checkpoint))
    cfg["optim"] = {"name": "sgd"}
    with pytest.raises(CheckpointError, match=re.escape(f"{checkpoint}: the checkpoint's run used optim.name=adamw but this "
                                                        "run uses sgd; resume with the same optimizer")):
        Trainer(cfg)
    cfg = config(run, resume=str(checkpoint))
    cfg["optim"] = {"scheduler": None}  # the checkpoint's run had the default cosine schedule
    with pytest.raises(CheckpointError, match=re.escape(f"{checkpoint}: optim.scheduler differs from the checkpoint's run")):
        Trainer(cfg)
    assert tree_digest(run) == before


def test_evaluating_a_checkpoint_with_a_mismatched_override(run):
    checkpoint = latest_checkpoint(run)
    # the checkpoint records the model as built (every size explicit): a changed size no longer fits the next layer
    with pytest.raises(SpecError, match=re.escape("layers[1].LIB.num_neurons: LIB num_neurons is 12 but its input has 7")):
        evaluate_checkpoint(checkpoint, ["model.layers.0.Linear.out_features=7"])
    with pytest.raises(ValueError, match=r"^cannot apply the overrides \{'model': \{'layers': \{'1': 3\}\}\}: "):
        evaluate_checkpoint(checkpoint, {"model": {"layers": {"1": 3}}})


def test_checkpoint_states_of_another_shape_are_refused(run, tmp_path):
    checkpoint = copy_checkpoint(run, tmp_path)
    from safetensors.torch import save_file

    states = read_state_file(checkpoint / "states.safetensors")
    states["1.mem"] = torch.zeros(4, 5)
    save_file(states, checkpoint / "states.safetensors")
    rewrite_manifest(checkpoint)
    with pytest.raises(CheckpointError, match=re.escape(
        f"{checkpoint}: the checkpoint's hidden states do not fit this model: cannot load states: 1.mem: shape (4, 5) does "
        "not have num_neurons=12 at dim=-1"
    )):
        Trainer(config(tmp_path / "run", resume=str(checkpoint)))
