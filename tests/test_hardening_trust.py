"""Second hardening round: a checkpoint never runs code, one run dir has one writer, no torn checkpoints,
re-signed malformed files give one clear error, unwritable run dirs and hostile inputs never escape as tracebacks."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_hardening_files import copy_checkpoint
from train_support import env_with_support

import tracetorch as tt
from tracetorch.core.state_io import StateFileError
from tracetorch.training import CheckpointError, Interrupted, Trainer, evaluate_checkpoint, load_checkpoint
from tracetorch.training.checkpoint import latest_checkpoint, list_checkpoints, read_manifest
from tracetorch.training.config import TrainConfig, UntrustedConfigError
from tracetorch.training.faults import RunDirError
from tracetorch.training.rundir import RunDirLock, unique_dir

MARKER_CODE = "import pathlib; pathlib.Path('{marker}').write_text('ran')"


def config(run_dir: Path | None, **trainer) -> dict:
    return {"seed": 0, "data": {"name": "poisson_clicks", "num_train": 48, "num_test": 16, "num_steps": 3, "batch_size": 16},
            "model": {"layers": [{"Linear": {"out_features": 8}}, {"LIB": {}}, {"Linear": {"out_features": 2}}, {"LI": {}}]},
            "trainer": {"epochs": 1, "device": "cpu", "run_dir": None if run_dir is None else str(run_dir), "plots": False,
                        "progress": False, "loggers": ["jsonl"], **trainer}}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    Trainer(config(run_dir)).fit()
    return run_dir


def resign(checkpoint: Path) -> None:
    """What anyone can do: rewrite manifest.json with the edited files' sizes and hashes."""
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    for name in manifest["files"]:
        data = (checkpoint / name).read_bytes()
        manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))


def edit_config(checkpoint: Path, change) -> None:
    cfg = yaml.safe_load((checkpoint / "config.yaml").read_text())
    change(cfg)
    (checkpoint / "config.yaml").write_text(yaml.safe_dump(cfg))
    resign(checkpoint)


# ---- 1. a checkpoint's config is data, not code ------------------------------------------------


@pytest.mark.parametrize("section", ["data", "model"])
def test_resigned_checkpoint_naming_a_factory_never_runs_it(run, tmp_path, section):
    checkpoint = copy_checkpoint(run, tmp_path)
    marker = tmp_path / "pwned.txt"
    edit_config(checkpoint, lambda c: c[section].update(factory="builtins:exec", source=MARKER_CODE.format(marker=marker)))
    with pytest.raises(UntrustedConfigError, match=rf"config.yaml: {section}.factory='builtins:exec' names code to import; "
                                                   rf"a checkpoint's config may not"):
        evaluate_checkpoint(checkpoint)
    with pytest.raises(UntrustedConfigError):
        tt.load_trained(checkpoint)
    assert not marker.exists()


def test_a_learning_rule_module_in_a_checkpoint_is_never_imported(run, tmp_path):
    checkpoint = copy_checkpoint(run, tmp_path)
    edit_config(checkpoint, lambda c: c["trainer"].update(learning="tt_no_such_module_anywhere:Rule"))
    assert evaluate_checkpoint(checkpoint)["samples"] == 16  # evaluation trains nothing: the rule is never imported
    config = yaml.safe_load((checkpoint / "config.yaml").read_text())
    with pytest.raises(UntrustedConfigError, match=r"trainer.learning='tt_no_such_module_anywhere:Rule' names code to import"):
        from tracetorch.training.config import check_untrusted

        check_untrusted(config, "config.yaml")


def test_interpolations_in_a_checkpoint_config_are_never_resolved(run, tmp_path, monkeypatch):
    monkeypatch.setenv("TT_TEST_SECRET", "hunter2")
    checkpoint = copy_checkpoint(run, tmp_path)
    edit_config(checkpoint, lambda c: c["data"].update(name="${oc.env:TT_TEST_SECRET}"))
    with pytest.raises(UntrustedConfigError, match=r"data.name holds an interpolation") as info:
        evaluate_checkpoint(checkpoint)
    assert "hunter2" not in str(info.value)


def test_interpolation_doubling_chain_is_refused_at_once(run, tmp_path):
    checkpoint = copy_checkpoint(run, tmp_path)

    def bomb(cfg):
        cfg["a0"] = "x"
        for i in range(1, 60):
            cfg[f"a{i}"] = f"${{a{i - 1}}}${{a{i - 1}}}"
        cfg["data"]["name"] = "${a59}"

    edit_config(checkpoint, bomb)
    start = time.perf_counter()
    with pytest.raises(UntrustedConfigError, match=r"holds an interpolation"):
        evaluate_checkpoint(checkpoint)
    assert time.perf_counter() - start < 10


def test_a_factory_the_caller_names_is_allowed(run, tmp_path):
    checkpoint = copy_checkpoint(run, tmp_path)
    edit_config(checkpoint, lambda c: c["data"].update(name=None, factory="tracetorch.data.datasets:clicks"))
    with pytest.raises(UntrustedConfigError, match=r"data.factory='tracetorch.data.datasets:clicks' names code"):
        evaluate_checkpoint(checkpoint)
    result = evaluate_checkpoint(checkpoint, ["data.factory=tracetorch.data.datasets:clicks"])
    assert result["samples"] == 16


def test_tt_eval_refuses_a_resigned_factory_in_one_line(run, tmp_path):
    checkpoint = copy_checkpoint(run, tmp_path)
    marker = tmp_path / "pwned.txt"
    edit_config(checkpoint, lambda c: c["data"].update(factory="builtins:exec", source=MARKER_CODE.format(marker=marker)))
    done = subprocess.run([sys.executable, "-m", "tracetorch.cli.eval", str(checkpoint)], cwd=tmp_path,
                          env=env_with_support(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("tt-eval: error: ")
    assert "names code to import" in done.stderr and not marker.exists()


# ---- 2. one run dir, one writer ------------------------------------------------------------------


def test_second_trainer_on_a_locked_run_dir_is_refused_naming_the_holder(tmp_path):
    first = Trainer(config(tmp_path / "run"))
    with pytest.raises(RunDirError, match=rf"run dir {re.escape(str(tmp_path / 'run'))} is in use by process {os.getpid()} "
                                          rf"\(one run dir, one writer\)"):
        Trainer(config(tmp_path / "run"))
    first.close()
    Trainer(config(tmp_path / "run")).close()  # released: the next one may write


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    code = ("import sys, time; from tracetorch.training.rundir import RunDirLock; RunDirLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=rf"in use by process {holder.pid} "):
            RunDirLock(run_dir).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    RunDirLock(run_dir).acquire().release()


def test_partial_checkpoints_of_a_live_process_are_never_touched(tmp_path):
    run_dir = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = run_dir / "checkpoints" / f".step_00000003.partial-{sleeper.pid}"
        dead = run_dir / "checkpoints" / ".step_00000002.partial-999999999"
        live.mkdir(parents=True)
        dead.mkdir()
        Trainer(config(run_dir)).close()
        assert live.is_dir() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_default_run_dirs_of_runs_started_in_the_same_second_differ(tmp_path, monkeypatch):
    from tracetorch.cli import train as cli_train

    monkeypatch.setenv("TT_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "2026-12-02/10-00-00")
    first = cli_train._output_dir([], multirun=False)
    second = cli_train._output_dir([], multirun=False)
    assert first == [f"hydra.run.dir={tmp_path / 'outputs' / '2026-12-02' / '10-00-00'}"]
    assert second == [f"hydra.run.dir={tmp_path / 'outputs' / '2026-12-02' / '10-00-00-1'}"]
    assert unique_dir(tmp_path / "x").name == "x" and unique_dir(tmp_path / "x").name == "x-1"


# ---- 3. no torn checkpoints ------------------------------------------------------------------------


def interrupt_during(trainer: Trainer, batch: int, signals: list[int]) -> None:
    original = trainer.rule.train_batch

    def train_batch(x, y):
        out = original(x, y)  # the optimizer step of this batch is done
        if trainer.batch == batch:
            for signum in signals:
                os.kill(os.getpid(), signum)
        return out

    trainer.rule.train_batch = train_batch


def test_second_ctrl_c_stops_without_writing_a_torn_checkpoint(tmp_path):
    trainer = Trainer(config(tmp_path / "run", checkpoint_every=1))
    interrupt_during(trainer, 1, [signal.SIGINT, signal.SIGINT])
    with pytest.raises(Interrupted) as info:
        trainer.fit()
    assert info.value.checkpoint is None and info.value.exit_code == 130
    steps = [read_manifest(p, verify=False)["global_step"] for _, p in list_checkpoints(tmp_path / "run")]
    assert steps == [1] and info.value.last == tmp_path / "run" / "checkpoints" / "step_00000001"


def test_sigterm_checkpoints_at_the_batch_boundary_and_says_143(tmp_path):
    trainer = Trainer(config(tmp_path / "run"))
    interrupt_during(trainer, 1, [signal.SIGTERM])
    with pytest.raises(Interrupted) as info:
        trainer.fit()
    assert info.value.exit_code == 143
    manifest = read_manifest(info.value.checkpoint)
    assert (manifest["batch"], manifest["global_step"]) == (2, 2)  # the batch during which it came was finished


def test_a_kill_between_the_renames_of_a_replaced_step_loses_nothing(run, tmp_path):
    checkpoint = copy_checkpoint(run, tmp_path)
    stranded = checkpoint.parent / f".{checkpoint.name}.old-999999999"  # the old copy, renamed away; the new one never came
    os.replace(checkpoint, stranded)
    assert latest_checkpoint(tmp_path / "run") is None
    Trainer(config(tmp_path / "run")).close()  # start-up tidies the run dir
    assert latest_checkpoint(tmp_path / "run") == checkpoint and not stranded.exists()
    load_checkpoint(checkpoint)


# ---- 4. malformed but re-signed files ---------------------------------------------------------------


def edit_json(checkpoint: Path, name: str, change) -> None:
    data = json.loads((checkpoint / name).read_text())
    change(data)
    (checkpoint / name).write_text(json.dumps(data))
    if name != "manifest.json":
        resign(checkpoint)


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.update(history=[1, 2]), r"trainer.json: history.0: Input should be a valid dictionary"),
    (lambda t: t["progress"].update(epoch="x"), r"trainer.json: progress.epoch: Input should be a valid integer"),
    (lambda t: t["progress"].update(batch=-3), r"trainer.json: progress.batch: Input should be greater than or equal to 0"),
    (lambda t: t["meter"].update(loss_sum="abc"), r"trainer.json: meter.loss_sum: Input should be a valid number"),
])
def test_malformed_trainer_state_is_one_error_naming_file_and_field(run, tmp_path, change, message):
    checkpoint = copy_checkpoint(run, tmp_path)
    edit_json(checkpoint, "trainer.json", change)
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    with pytest.raises(CheckpointError, match=message):
        Trainer(config(tmp_path / "run", resume="auto"))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before


def test_deeply_nested_trainer_state_is_refused(run, tmp_path):
    checkpoint = copy_checkpoint(run, tmp_path)
    deep: object = 1
    for _ in range(600):
        deep = [deep]
    edit_json(checkpoint, "trainer.json", lambda t: t.update(extra=deep))
    with pytest.raises(CheckpointError, match=r"trainer.json: nested more than 64 levels deep"):
        load_checkpoint(checkpoint)


@pytest.mark.parametrize(("text", "message"), [
    ('{"format": "tracetorch-checkpoint", "version": 1, "global_step": Infinity}', r"not valid JSON .*Infinity is not allowed"),
    ("[" * 200_000 + "]" * 200_000, r"400,000 bytes is more than a checkpoint's manifest.json may hold"),
    ('{"format": "tracetorch-checkpoint", "version": 1, "global_step": 1e400}', r"global_step must be a non-negative integer"),
    ('{"format": "tracetorch-checkpoint", "version": 1, "global_step": -2}', r"global_step must be a non-negative integer"),
    ('{"pad": "' + "x" * 70_000 + '"}', r"70,0\d\d bytes is more than a checkpoint's manifest.json may hold \(65,536\)"),
])
def test_malformed_manifests_are_one_error_and_resume_auto_skips_them(run, tmp_path, text, message):
    checkpoint = copy_checkpoint(run, tmp_path)
    (checkpoint / "manifest.json").write_text(text)
    with pytest.raises(CheckpointError, match=message):
        read_manifest(checkpoint)
    assert list_checkpoints(tmp_path / "run") == []


# ---- 5. and 6. unwritable run dirs and hostile inputs through the CLI -----------------------------------


def cli(tmp_path: Path, *args: str, module: str = "train") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"tracetorch.cli.{module}", *args], cwd=tmp_path, env=env_with_support(),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("where", ["/proc/tt-run", "/sys/tt-run", "a-file"])
def test_unwritable_hydra_run_dir_is_one_line_and_exit_2(tmp_path, where):
    (tmp_path / "a-file").write_text("not a folder")
    done = cli(tmp_path, "trainer.epochs=1", f"hydra.run.dir={where}")
    assert done.returncode == 2, done.stderr[-1500:]
    assert re.fullmatch(r"tt-train: error: cannot write \S+: .*\n", done.stderr), done.stderr[-1500:]


@pytest.mark.parametrize(("override", "message"), [
    ("trainer.device=meta", r"trainer.device must be auto, cpu, cuda or cuda:N, got 'meta'"),
    ("seed=-1", r"seed: Input should be greater than or equal to 0"),
    ("seed=1234567890123456789012345", r"seed: Input should be less than or equal to 9223372036854775807"),
    ("trainer.epochs=true", r"trainer.epochs: Input should be a valid integer"),
    ("optim.lr=inf", r"optim.lr: Input should be a finite number"),
])
def test_override_values_are_checked_naming_the_key(override, message):
    from tracetorch.cli.config import ConfigError, check_overrides

    with pytest.raises(ConfigError, match=message):
        check_overrides([override])


def test_model_files_that_are_not_text_or_not_files_are_refused_and_the_rest_checked(tmp_path):
    (tmp_path / "latin1.yaml").write_bytes("layers:\n  - LI: {}  # caf\xe9\n".encode("latin-1"))
    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    good = tmp_path / "good.yaml"
    good.write_text("input_shape: [4]\nlayers:\n  - Linear: {out_features: 3}\n  - LI: {}\n")
    done = cli(tmp_path, "latin1.yaml", "fifo.yaml", "zero.yaml", str(good), module="validate")
    assert done.returncode == 2
    assert "latin1.yaml: not UTF-8 text (byte 25: invalid continuation byte); save the file as UTF-8" in done.stderr
    assert done.stderr.count("not a regular file (a directory, FIFO or device)") == 2
    assert f"{good}: OK" in done.stdout


def test_a_long_document_without_aliases_is_not_an_alias_bomb(tmp_path):
    lines = ["input_shape: [4]", "layers:", "  - Linear: {out_features: 3}", "  - LI: {}", "name: long", "notes:"]
    lines += [f"  - {i}" for i in range(100_050)]
    from tracetorch.builder.yaml_lines import load_yaml

    data, _, problems = load_yaml("\n".join(lines))
    assert problems == [] and len(data["notes"]) == 100_050


def test_ctrl_c_during_tt_eval_is_one_line(run, tmp_path):
    # Python's own Ctrl-C handler, as in a terminal: under a shell's background job (`cmd &`) SIGINT
    # comes ignored, and Python then leaves it ignored
    code = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "import sys, time, tracetorch.cli.eval as cli, tracetorch.training.resume as r; real = r._trainer_for\n"
            "def slow(*a, **k):\n    print('ready', flush=True); time.sleep(30); return real(*a, **k)\n"
            "r._trainer_for = slow; cli.main(sys.argv[1:])")
    process = subprocess.Popen([sys.executable, "-c", code, str(latest_checkpoint(run))], cwd=tmp_path, env=env_with_support(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert (process.returncode, err) == (130, "tt-eval: interrupted\n")


# ---- weak spots ----------------------------------------------------------------------------------------


def test_expanded_tensor_in_a_pt_state_file_is_refused_before_allocating(tmp_path):
    path = tmp_path / "states.pt"
    torch.save({"0.mem": torch.zeros(1).expand(10**11)}, path)
    assert path.stat().st_size < 4096
    net = tt.Sequential(torch.nn.Linear(2, 3), tt.snn.LIB(3))
    with pytest.raises(StateFileError, match=r"states.pt: tensor '0.mem' of shape \[100000000000\] is a view backed by only 4 "
                                             r"bytes"):
        net.load_states_file(path)


def test_checkpoint_files_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        trainer = Trainer(config(tmp_path / "run"))
        path = trainer.save_checkpoint()
        trainer.close()
    finally:
        os.umask(old)
    for file in path.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o644, file


def test_resume_applies_a_changed_learning_rate_and_a_longer_schedule(tmp_path, caplog):
    first = Trainer(config(tmp_path / "run", epochs=2))
    first.train_epoch()
    path = first.save_checkpoint()
    first.close()
    lr_now = first.optimizer.param_groups[0]["lr"]
    with caplog.at_level("INFO", logger="tracetorch.training"):
        resumed = Trainer({**config(tmp_path / "run", epochs=4, resume=str(path)), "optim": {"lr": 0.03}})
    group = resumed.optimizer.param_groups[0]
    assert group["initial_lr"] == 0.03 and group["lr"] == pytest.approx(0.03 * lr_now / 3e-3)
    assert resumed.scheduler.T_max == 4 and resumed.scheduler.base_lrs == [0.03]
    assert "applied changed settings: optim.lr: 0.003 -> 0.03; schedule T_max: 2 -> 4" in caplog.text
    resumed.close()


def test_keep_checkpoints_makes_room_before_writing(tmp_path, monkeypatch):
    from tracetorch.training import checkpoint as files

    seen = []
    original = files.save_checkpoint

    def save(directory, **kwargs):
        seen.append(len(files.list_checkpoints(Path(directory).parent.parent)))
        return original(directory, **kwargs)

    monkeypatch.setattr(files, "save_checkpoint", save)
    Trainer(config(tmp_path / "run", epochs=1, checkpoint_every=1, keep_checkpoints=2)).fit()
    assert max(seen) <= 1 and len(list_checkpoints(tmp_path / "run")) == 2


def test_trainer_config_did_you_mean():
    with pytest.raises(ValueError, match=r"trainer.epoch: Extra inputs are not permitted \(did you mean 'epochs'\?\)"):
        TrainConfig.from_any({"trainer": {"epoch": 3}})
