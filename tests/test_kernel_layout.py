"""The C++ and Triton kernels read parameters and states in the grammar's slot order (no compiler needed).

``tracetorch.snn.grammar.PARAM_SLOTS`` / ``STATE_SLOTS`` are the one description of the
``[13, N]`` / ``[7, M]`` blocks the layers hand to the kernels. ``neuron_kernels.h`` names
the rows with enums (``P_<code>``, ``S_<code>``); the Triton kernels load each row into a
local named by the code in lower case. Both are parsed here and compared with the tables,
as are the family and quantizer codes of :mod:`tracetorch.kernels.fused`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tracetorch.kernels.fused import FAMILY_CODES, QUANT_CODES, STATE_ROWS
from tracetorch.snn.grammar import FAMILIES, PARAM_SLOTS, STATE_SLOTS, layer_names, param_slot_names, parse

KERNELS = Path(__file__).resolve().parents[1] / "tracetorch" / "kernels"
HEADER = (KERNELS / "neuron_kernels.h").read_text()
TRITON = ast.parse((KERNELS / "triton_kernels.py").read_text())
QUANT_ENUM = {"Q_ID": "identity", "Q_ROUND": "round", "Q_SROUND": "stochastic_round", "Q_PROB": "probabilistic"}


def cpp_enums(text: str) -> list[tuple[str, dict[str, int]]]:
    """``(enum name or "", {constant: value})`` for every ``enum`` in C++ source text (implicit values counted)."""
    enums = []
    for name, body in re.findall(r"\benum\s*(\w*)\s*\{([^}]*)\}", text):
        values, nxt = {}, 0
        for entry in (e.strip() for e in body.split(",")):
            if not entry:
                continue
            key, _, value = (part.strip() for part in entry.partition("="))
            nxt = int(value) if value else nxt
            values[key] = nxt
            nxt += 1
        enums.append((name, values))
    return enums


def enum_with(text: str, member: str) -> dict[str, int]:
    (values,) = [values for _, values in cpp_enums(text) if member in values]
    return values


def slot_rows(values: dict[str, int], prefix: str) -> list[str]:
    """The ``prefix``-named constants in row order (the count constant left out)."""
    return [k for k, _ in sorted(values.items(), key=lambda kv: kv[1]) if k.startswith(prefix)]


def check_header(text: str) -> None:
    params = enum_with(text, "P_A")
    assert slot_rows(params, "P_") == [f"P_{slot.code}" for slot in PARAM_SLOTS]
    assert params["NP"] == len(PARAM_SLOTS)
    states = enum_with(text, "S_SYN")
    assert slot_rows(states, "S_") == [f"S_{slot.code}" for slot in STATE_SLOTS]
    assert states["NS"] == len(STATE_SLOTS)
    families = dict(cpp_enums(text))["Family"]
    assert families == FAMILY_CODES and list(families) == list(FAMILIES)
    quants = dict(cpp_enums(text))["Quant"]
    assert {QUANT_ENUM[k]: v for k, v in quants.items()} == QUANT_CODES


def test_cpp_constants_follow_the_grammar_slot_tables() -> None:
    check_header(HEADER)


def test_the_header_check_catches_a_swapped_slot() -> None:
    swapped = HEADER.replace("P_B, P_NB,", "P_NB, P_B,")
    assert swapped != HEADER
    with pytest.raises(AssertionError):
        check_header(swapped)


def _function(name: str) -> ast.FunctionDef:
    (fn,) = [node for node in TRITON.body if isinstance(node, ast.FunctionDef) and node.name == name]
    return fn


def _row(pointer: ast.expr) -> int:
    """``k`` of a pointer expression ``ptr + k * N + e``."""
    rows = [n.left.value for n in ast.walk(pointer) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult)
            and isinstance(n.left, ast.Constant)]
    assert len(rows) == 1, ast.unparse(pointer)
    return rows[0]


def triton_rows(name: str) -> tuple[dict[str, int], list[str]]:
    """``({local: row}, order of the returned or stored locals)`` of one Triton load/store helper."""
    rows, order = {}, []
    for node in _function(name).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):  # v = tl.load(ptr + k * N + n, ...)
            rows[node.targets[0].id] = _row(node.value.args[0])
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and ast.unparse(node.value.func) == "tl.store":
            rows[node.value.args[1].id] = _row(node.value.args[0])
            order.append(node.value.args[1].id)
        elif isinstance(node, ast.Return):
            order = [elt.id for elt in node.value.elts]
    return rows, order


@pytest.mark.parametrize(("function", "slots"), [("_load_params", PARAM_SLOTS), ("_load_states", STATE_SLOTS),
                                                 ("_store_states", STATE_SLOTS)])
def test_triton_rows_follow_the_grammar_slot_tables(function, slots) -> None:
    rows, order = triton_rows(function)
    want = [slot.code.lower() for slot in slots]
    assert rows == {code: k for k, code in enumerate(want)}
    assert order == want
    if function == "_store_states":
        assert [a.arg for a in _function(function).args.args][-len(want):] == want


def test_every_name_of_the_parameter_table_has_a_slot() -> None:
    from tracetorch.snn.grammar import param_specs, state_names, state_slot_names

    for name in layer_names():
        flags = parse(name)
        assert sorted(n for n in param_slot_names(flags) if n) == sorted(s.name for s in param_specs(flags)), name
        assert sorted(n for n in state_slot_names(flags) if n) == sorted(state_names(flags)), name


def test_state_rows_is_the_number_of_state_slots() -> None:
    assert STATE_ROWS == len(STATE_SLOTS)


@pytest.mark.parametrize("name", layer_names())
def test_the_compiled_kernel_reads_exactly_the_slots_the_layer_fills(name: str) -> None:
    from tracetorch.kernels import cpu
    from tracetorch.kernels.fused import Meta
    from tracetorch.snn.grammar import state_slot_names

    if not cpu.available():
        pytest.skip("no C++ compiler: the compiled kernels are not built")
    flags = parse(name)
    meta = Meta(flags, "identity", 1.0, 1, 1, need_x=False)
    params, states = cpu.CpuBackend(cpu.load()).slots(meta)
    assert [bool(params >> k & 1) for k in range(len(PARAM_SLOTS))] == [n is not None for n in param_slot_names(flags)]
    assert [bool(states >> k & 1) for k in range(len(STATE_SLOTS))] == [n is not None for n in state_slot_names(flags)]
