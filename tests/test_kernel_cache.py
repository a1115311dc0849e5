"""The C++ kernels' build cache: keyed by content, torch version and flags; every build announced; the build command."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from tracetorch.kernels import cpu
from tracetorch.kernels.__main__ import main

BUILDING = "traceTorch: building the C++ kernels"


def copy_tree(target: Path) -> tuple[list[Path], list[Path]]:
    """A copy of the kernel sources and headers in ``target``, as another clone or venv would hold them."""
    target.mkdir(parents=True)
    sources = [Path(shutil.copy(source, target)) for source in cpu.SOURCES]
    headers = [Path(shutil.copy(header, target)) for header in cpu.HEADERS]
    return sources, headers


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-2] ^= 1
    path.write_bytes(bytes(data))


def test_identical_sources_share_a_key_and_a_changed_byte_gets_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    same_a, same_b, changed = (copy_tree(tmp_path / name) for name in ("a", "b", "c"))
    flip_one_byte(changed[1][0])  # neuron_kernels.h: a header counts like a source
    plan = cpu.build_plan()
    plan_a, plan_b, plan_c = (cpu.build_plan(*tree) for tree in (same_a, same_b, changed))
    assert plan_a.key == plan_b.key == plan.key and plan_a.directory == plan_b.directory == plan.directory
    assert plan_c.key != plan_a.key and plan_c.directory != plan_a.directory
    assert plan_a.directory == tmp_path / "ext" / f"tracetorch_kernels_{plan.variant}_{plan.key}"
    assert plan_c.directory.parent == plan_a.directory.parent  # both in the one extension cache
    # the key also follows the flags and the torch version
    files = [*same_a[0], *same_a[1]]
    assert cpu.cache_key(files, ["-O3"]) != cpu.cache_key(files, ["-O2"])
    before = cpu.cache_key(files, ["-O3"])
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    assert cpu.cache_key(files, ["-O3"]) != before
    monkeypatch.undo()
    assert cpu.cache_key(files, ["-O3"]) == before


def test_two_source_versions_coexist_each_compiled_from_its_own_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    original = copy_tree(tmp_path / "a")
    changed = copy_tree(tmp_path / "c")
    flip_one_byte(changed[0][-1])  # neuron_cpu.cpp
    plans = [cpu.build_plan(*tree) for tree in (original, changed)]
    for plan, (sources, headers) in zip(plans, (original, changed)):
        staged = plan.stage()
        assert [Path(s).parent for s in staged] == [plan.directory / "src"] * len(sources)
        for path in (*sources, *headers):
            assert (plan.directory / "src" / path.name).read_bytes() == path.read_bytes()
        plan.library.write_bytes(b"")  # stands for the linked library
    assert all(plan.built for plan in plans)
    assert plans[0].others() == [plans[1].directory] and plans[1].others() == [plans[0].directory]
    # staging again leaves the copies alone (a rewrite would make ninja rebuild)
    copied = plans[0].directory / "src" / "neuron_cpu.cpp"
    stamp = copied.stat().st_mtime_ns
    time.sleep(0.01)
    plans[0].stage()
    assert copied.stat().st_mtime_ns == stamp


def fake_build(plan_dir: list[Path], delay: float):  # type: ignore[no-untyped-def]
    """Stands in for torch's ``cpp_extension.load``: writes the object files one by one, then the library."""

    def build(*, name: str, sources: list[str], build_directory: str, **_: object) -> str:
        directory = Path(build_directory)
        plan_dir.append(directory)
        assert all(Path(source).parent == directory / "src" for source in sources)
        for source in sources:
            time.sleep(delay)
            (directory / f"{Path(source).stem}.o").write_bytes(b"")
        (directory / f"{name}.so").write_bytes(b"")
        return str(directory / f"{name}.so")

    return build


def test_every_build_is_announced_with_progress_including_a_rebuild_for_changed_sources(tmp_path, monkeypatch, caplog):
    assert cpu.available()  # the ops are registered in this process; the stubbed builds below keep them
    sources, headers = copy_tree(tmp_path / "src")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.setattr(cpu, "SOURCES", tuple(sources))
    monkeypatch.setattr(cpu, "HEADERS", tuple(headers))
    monkeypatch.setattr(cpu, "PROGRESS_SECONDS", 0.05)
    built: list[Path] = []
    monkeypatch.setattr("torch.utils.cpp_extension.load", fake_build(built, delay=0.08))

    def messages() -> list[str]:
        cpu.load.cache_clear()
        monkeypatch.setattr(cpu, "_loaded_library", None)  # as in a fresh process
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="tracetorch.kernels"):
            assert cpu.load() is not None
        return [r.getMessage() for r in caplog.records]

    try:
        first = messages()
        first_dir = cpu.build_plan().directory
        assert first[0] == f"{BUILDING} ({cpu.BUILD_TIME}) in {first_dir}"
        progress = [m for m in first if "parts done" in m]
        counts = [int(m.split(": ")[-1].split("/")[0]) for m in progress]
        assert progress and counts == sorted(counts) and all(m.endswith(" s") and "/7 parts done, " in m for m in progress)
        assert first[-1].startswith("traceTorch: built the C++ kernels in ")
        assert messages() == []  # cached: silent
        flip_one_byte(sources[2])
        again = messages()
        second_dir = cpu.build_plan().directory
        assert second_dir != first_dir and first_dir.is_dir()  # the old build stays
        assert again[0] == (f"{BUILDING} ({cpu.BUILD_TIME}) in {second_dir}; the sources, torch version or flags differ "
                            "from the 1 other cached build(s)")
        assert built == [first_dir, first_dir, second_dir]  # the cached load still goes through torch (ninja no-op)
    finally:
        cpu.load.cache_clear()


@pytest.mark.skipif(not cpu.available(), reason="needs the compiled C++ kernels")
def test_a_process_keeps_the_build_it_loaded_when_the_sources_change(tmp_path, monkeypatch, caplog):
    # torch aborts the process on a second library registering the same ops: never load one
    loaded = tmp_path / "tracetorch_kernels_avx2_0123" / "tracetorch_kernels_avx2_0123.so"
    monkeypatch.setattr(cpu, "_loaded_library", loaded)

    def no_build(**_: object) -> None:
        raise AssertionError("a second build was loaded")

    monkeypatch.setattr("torch.utils.cpp_extension.load", no_build)
    cpu.load.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="tracetorch.kernels"):
            assert cpu.load() is torch.ops.tracetorch_kernels
    finally:
        cpu.load.cache_clear()
    assert [r.getMessage() for r in caplog.records] == [
        "traceTorch: the kernel sources changed after this process loaded tracetorch_kernels_avx2_0123; it keeps that "
        f"build (one process cannot load two): restart Python to use {cpu.build_plan().name}"]


def test_progress_is_reported_while_the_build_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    plan = cpu.build_plan(*copy_tree(tmp_path / "src"))
    plan.directory.mkdir(parents=True)
    said: list[str] = []
    release = threading.Event()

    def build() -> None:
        (plan.directory / f"{plan.sources[0].stem}.o").write_bytes(b"")
        release.wait(5)

    timer = threading.Timer(0.35, release.set)
    timer.start()
    monkeypatch.setattr(cpu, "say", said.append)
    cpu.build_with_progress(build, plan, interval=0.1)
    assert said[0].startswith(f"traceTorch: building the C++ kernels: 1/{len(plan.sources) + 1} parts done, ")
    assert len(said) >= 3 and said[-1].startswith("traceTorch: built the C++ kernels in ")


def test_a_failed_build_raises_into_the_fallback_warning(tmp_path, monkeypatch, caplog):
    sources, headers = copy_tree(tmp_path / "src")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.setattr(cpu, "SOURCES", tuple(sources))
    monkeypatch.setattr(cpu, "HEADERS", tuple(headers))

    def broken(**_: object) -> None:
        raise RuntimeError("Error building extension\nneuron_cpu.cpp:1: error: boom")

    monkeypatch.setattr("torch.utils.cpp_extension.load", broken)
    monkeypatch.setattr(cpu, "_loaded_library", None)  # as in a fresh process
    cpu.load.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="tracetorch.kernels"):
            assert cpu.load() is None
    finally:
        cpu.load.cache_clear()
    assert caplog.records[0].getMessage().startswith(BUILDING)
    failed = "traceTorch: building the C++ kernels failed (neuron_cpu.cpp:1: error: boom)"
    assert caplog.records[-1].getMessage() == f"{failed}; {cpu.FALLBACK}"


def test_the_real_library_is_loaded_from_its_cache_entry():
    plan = cpu.build_plan()
    assert cpu.available() == plan.built
    if cpu.available():
        assert str(plan.library) in torch.ops.loaded_libraries
        assert (plan.directory / "src" / "neuron_kernels.h").read_bytes() == cpu.HEADERS[0].read_bytes()


def test_build_command_help_and_dry_run(tmp_path, monkeypatch, capsys):
    shown = subprocess.run([sys.executable, "-m", "tracetorch.kernels", "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "build" in shown.stdout and "list" in shown.stdout
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    assert main(["build", "--dry-run"]) == 0
    plan = cpu.build_plan()
    lines = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert lines["key"] == plan.key and lines["directory"] == str(plan.directory)
    assert lines["status"] == f"not built (a build takes {cpu.BUILD_TIME})"
    assert not plan.directory.exists()  # a dry run builds nothing
    assert main(["list"]) == 0 and capsys.readouterr().out == f"no cached builds in {tmp_path / 'ext'}\n"
    monkeypatch.setenv("TRACETORCH_NO_CPP", "1")
    assert main(["build", "--dry-run"]) == 0
    assert "status     unavailable: TRACETORCH_NO_CPP is set; " in capsys.readouterr().out


def test_build_command_without_a_compiler_fails_clearly(monkeypatch, capsys):
    monkeypatch.setenv("CXX", "no-such-compiler-tt")
    cpu.load.cache_clear()
    try:
        assert main(["build"]) == 1
    finally:
        cpu.load.cache_clear()
    assert "the C++ kernels are not available" in capsys.readouterr().err


def test_build_command_when_cached_only_loads(capsys, caplog):
    if not cpu.build_plan().built:
        pytest.skip("the kernels are not built here (no compiler); the announced build is tested with a stub above")
    with caplog.at_level(logging.INFO, logger="tracetorch.kernels"):
        assert main(["build"]) == 0
    assert capsys.readouterr().out == f"ready: {cpu.build_plan().library}\n"
    assert not [r for r in caplog.records if r.getMessage().startswith(BUILDING)]
    assert main(["list"]) == 0 and f"{cpu.build_plan().directory}  " in capsys.readouterr().out


def test_quick_start_shows_the_build_command():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "python -m tracetorch.kernels build" in quick_start and "TRACETORCH_NO_CPP=1" in quick_start
    assert cpu.BUILD_TIME.split(" on ")[0] in quick_start  # the same build time as the announcement


def test_a_build_killed_midway_does_not_block_the_next_one(tmp_path):
    """torch's plain ``lock`` file outlives a killed build; the next builder (holding the fcntl lock) removes it."""
    from tracetorch.kernels.cpu import _builder_lock

    (tmp_path / "lock").write_text("")  # what a Ctrl-C during the first build leaves behind
    with _builder_lock(tmp_path):
        assert not (tmp_path / "lock").exists()


def test_load_is_cached_and_the_builder_lock_is_reusable(tmp_path):
    from tracetorch.kernels import cpu

    assert cpu.load() is cpu.load()
    for _ in range(2):
        with cpu._builder_lock(tmp_path):
            pass
