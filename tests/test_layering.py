"""One source of truth: imports point down, states are written in one place, suggestions come from one helper.

* the kernels import nothing above them, and importing ``tracetorch.core`` or building a
  ``tt.Sequential`` never imports the C++ loader;
* :meth:`tt.Layer.set_state` is the one writer of a state slot, and :mod:`tracetorch.core.states`
  the one module of whole-model state operations (``tt.Model``'s methods call it);
* every did-you-mean message goes through :mod:`tracetorch.suggest`, and the layer
  constructors and the model-file builder take their keyword hints from one analysis.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import tracetorch as tt
from tracetorch.builder.hints import unknown_argument
from tracetorch.core import states
from tracetorch.kernels import dispatch
from tracetorch.snn.grammar import layer_names, param_specs, parse
from tracetorch.snn.hints import constructor_message, keyword_hint
from tracetorch.suggest import close_matches, did_you_mean

PACKAGE = Path(tt.__file__).parent


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py")) if folder else [PACKAGE / "suggest.py", PACKAGE / "functional.py"]


def _imports(path: Path) -> set[str]:
    """Every ``tracetorch`` module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tracetorch"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("tracetorch")}
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module") and node.args:
            found.add(ast.literal_eval(node.args[0]))
    return found


ALLOWED = {  # what each layer of the package may import, besides itself
    "": {"tracetorch.functional", "tracetorch.suggest"},
    "kernels": {"tracetorch.functional", "tracetorch.kernels"},
    "core": {"tracetorch.functional", "tracetorch.kernels", "tracetorch.core"},
    "snn": {"tracetorch.functional", "tracetorch.kernels", "tracetorch.core", "tracetorch.snn", "tracetorch.suggest"},
}


@pytest.mark.parametrize("folder", list(ALLOWED))
def test_imports_point_down(folder: str) -> None:
    for path in _modules(folder):
        for module in _imports(path):
            assert any(module == a or module.startswith(a + ".") for a in ALLOWED[folder]), f"{path.name} imports {module}"


def test_importing_core_and_building_a_sequential_leaves_the_cpp_loader_alone() -> None:
    code = (
        "import sys, torch\n"
        "import tracetorch.core\n"
        "import tracetorch as tt\n"
        "net = tt.Sequential(torch.nn.Linear(3, 4), tt.snn.LIB(4), torch.nn.Linear(4, 2))\n"
        "net(torch.rand(2, 3)); net.zero_states()\n"
        "bad = [m for m in ('tracetorch.kernels.cpu', 'tracetorch.kernels.event_linear', 'tracetorch.kernels.event_conv',\n"
        "                   'tracetorch.kernels.pooling', 'torch.utils.cpp_extension', 'tracetorch.kernels.triton_kernels')\n"
        "       if m in sys.modules]\n"
        "print('loaded:', bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "loaded: []"


# ---- states ---------------------------------------------------------------------------------


class Writes:
    """Records every call of ``Layer.set_state``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str]] = []
        original = tt.Layer.set_state

        def spy(layer: tt.Layer, name: str, value: torch.Tensor | None) -> None:
            self.calls.append((type(layer).__name__, name))
            original(layer, name, value)

        monkeypatch.setattr(tt.Layer, "set_state", spy)

    def take(self) -> list[tuple[str, str]]:
        calls, self.calls = self.calls, []
        return calls


def _held(layer: tt.Layer) -> dict[str, torch.Tensor | None]:
    return {name: value for name, value in layer.states()}


def test_every_state_write_goes_through_set_state(monkeypatch: pytest.MonkeyPatch) -> None:
    net = tt.Sequential(nn.Linear(3, 4), tt.snn.SRLIB(4), tt.snn.DLI(4))
    writes = Writes(monkeypatch)
    names = [("SRLIB", n) for n in net[1].state_names()] + [("DLI", n) for n in net[2].state_names()]
    net(torch.rand(2, 3))
    assert sorted(writes.take()) == sorted(names)  # one step
    with dispatch.force("reference"):
        net.run(torch.rand(5, 2, 3))
    assert sorted(writes.take()) == sorted(names)  # a sequence
    snapshot = net.save_states()
    for operation in (net.detach_states, net.double, net.float, net.zero_states, lambda: net.load_states(snapshot)):
        operation()
        assert sorted(writes.take()) == sorted(names)
    restored = states.snapshot_states(net)
    net.zero_states()
    writes.take()
    states.restore_states(restored)
    assert sorted(writes.take()) == sorted(names)
    assert all(torch.equal(net.save_states()[k], v) for k, v in snapshot.items())


def test_set_state_refuses_unknown_names_and_non_tensors() -> None:
    layer = tt.snn.LIB(3)
    with pytest.raises(KeyError, match=r"LIB\(num_neurons=3, dim=-1\): no hidden state 'syn'; its states are mem"):
        layer.set_state("syn", torch.zeros(3))
    with pytest.raises(TypeError, match=r"state 'mem' must be a tensor or None, got list"):
        layer.set_state("mem", [0.0, 0.0, 0.0])
    layer.set_state("mem", torch.ones(2, 3))
    assert torch.equal(layer.mem, torch.ones(2, 3))


def test_no_module_writes_state_slots_behind_the_layer() -> None:
    """``object.__setattr__`` on a layer appears once in core (inside ``set_state``) and nowhere in the kernels."""
    counts = {}
    for path in _modules("core") + _modules("kernels") + _modules("snn"):
        calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
                 and ast.unparse(n.func) == "object.__setattr__"]
        counts[path.relative_to(PACKAGE).as_posix()] = [ast.unparse(c.args[1]) for c in calls]
    assert counts.pop("core/layer.py") == ["name"]
    assert counts.pop("snn/layer.py") == ["key"]  # spike_fn / quant_fn: functions, not states
    assert not any(counts.values()), counts


def test_model_state_methods_are_the_states_module(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    for name in ("zero_states", "detach_states", "save_states", "load_states", "save_states_file", "load_states_file"):
        monkeypatch.setattr(states, name, lambda *args, _n=name, **kw: seen.append(_n))
    net = tt.Sequential(tt.snn.LIB(2))
    net.zero_states(); net.detach_states(); net.save_states(); net.load_states({})  # noqa: E702
    net.save_states_file("x.pt"); net.load_states_file("x.pt")  # noqa: E702
    assert seen == ["zero_states", "detach_states", "save_states", "load_states", "save_states_file", "load_states_file"]


def test_states_module_serves_any_module(tmp_path: Path) -> None:
    """A plain ``nn.Module`` holding layers in a list gets the same operations as a ``tt.Model``."""

    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 4)
            self.blocks = [tt.snn.SLIB(4), tt.snn.DLIT(4)]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.blocks[1](self.blocks[0](self.fc(x)))

    torch.manual_seed(0)
    model = Plain()
    model(torch.rand(2, 3))
    saved = states.save_states(model)
    assert sorted(saved) == ["blocks.0.mem", "blocks.0.syn", "blocks.1.neg_mem", "blocks.1.pos_mem"]
    snapshot = states.snapshot_states(model)
    states.zero_states(model)
    assert all(v is None for _, layer in states.iter_layers(model) for _, v in layer.states())
    states.restore_states(snapshot)
    assert all(a is b for (_, _, a), (_, _, b) in zip(snapshot, states.snapshot_states(model)))  # the same tensors
    states.save_states_file(model, tmp_path / "s.safetensors")
    states.zero_states(model)
    states.load_states_file(model, tmp_path / "s.safetensors")
    assert all(torch.equal(states.save_states(model)[k], v) for k, v in saved.items())
    with pytest.raises(tt.StateFileError, match="missing states: blocks.0.mem, blocks.0.syn, blocks.1.neg_mem, "
                       "blocks.1.pos_mem; unexpected states: mem, syn"):
        states.save_states_file(model.blocks[0], tmp_path / "one.pt")
        states.load_states_file(model, tmp_path / "one.pt")


# ---- suggestions and hints -------------------------------------------------------------------


def _text_constants(path: Path) -> list[str]:
    """String constants of a module, f-string parts included, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings]


def test_every_did_you_mean_goes_through_one_helper() -> None:
    offenders = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "cli").rglob("*.py")]):
        if path.name == "suggest.py" and path.parent == PACKAGE:
            continue
        tree = ast.parse(path.read_text())
        modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        if "difflib" in modules:
            offenders.append(f"{path.name}: imports difflib")
        offenders += [f"{path.name}: {s!r}" for s in _text_constants(path) if "did you mean" in s.lower()]
    assert offenders == []


def test_close_matches_and_wording() -> None:
    assert close_matches("SDLIB", layer_names(), anagrams=True)[0] == "DSLIB"
    assert close_matches("LINEAR", ["Linear", "Conv2d"], cutoff=0.9) == []
    assert close_matches("LINEAR", ["Linear", "Conv2d"], cutoff=0.9, ignore_case=True) == ["Linear"]
    assert did_you_mean(["a", "b"], capital=True) == "Did you mean 'a' or 'b'?"
    assert did_you_mean(["trainer.epochs"], quote=False) == "did you mean trainer.epochs?"
    assert did_you_mean([]) == ""


def _all_parameter_names() -> list[str]:
    return sorted({spec.name for name in layer_names() for spec in param_specs(parse(name))})


@pytest.mark.parametrize("layer", layer_names())
def test_constructor_and_builder_name_the_same_layer(layer: str) -> None:
    flags = parse(layer)
    own = {spec.name for spec in param_specs(flags)}
    for key in [k for k in _all_parameter_names() if k not in own]:
        hint = keyword_hint(flags, key)
        assert hint is not None, key  # every parameter of some layer gets a reason
        message = str(constructor_message(layer, flags, key))
        spec = unknown_argument(layer, key)
        if hint.kind == "elsewhere":
            assert f"{hint.holder.name} has" in message, message
            assert hint.impossible or f"{hint.holder.name} has" in spec, spec
        else:
            assert "split" in spec and ("split" in message or "one per event sign" in message), (message, spec)
    key = next(k for k in _all_parameter_names() if k not in own)
    with pytest.raises(TypeError) as err:
        tt.snn.get_layer_class(layer)(2, **{key: 0.5})
    assert str(err.value) == str(constructor_message(layer, flags, key))
