from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from miniprogram_pay.domain.machine import TRANSITIONS, mermaid_diagram
from miniprogram_pay.domain.refunds import REFUND_TRANSITIONS, refund_mermaid_diagram

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "run `python scripts/gen_state_diagram.py` to regenerate it"
FENCE = re.compile(r"^```mermaid\n(.*?)^```$", re.MULTILINE | re.DOTALL)

Table = Sequence[dict[str, Any]]
DIAGRAMS: list[tuple[str, Callable[[], str], Table, str]] = [
    ("state-machine.md", mermaid_diagram, TRANSITIONS, "Created"),
    ("refunds.md", refund_mermaid_diagram, REFUND_TRANSITIONS, "Requested"),
]


def _normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).rstrip("\n")


IDS = [doc for doc, *_ in DIAGRAMS]


@pytest.mark.parametrize(("doc", "draw", "table", "initial"), DIAGRAMS, ids=IDS)
def test_doc_holds_the_generated_diagram(
    doc: str, draw: Callable[[], str], table: Table, initial: str
) -> None:
    wanted = _normalise(draw())
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    blocks = [_normalise(m.group(1)) for m in FENCE.finditer(text)]
    assert wanted in blocks, f"{doc} does not show the current state diagram; {REGENERATE}"


@pytest.mark.parametrize(("doc", "draw", "table", "initial"), DIAGRAMS, ids=IDS)
def test_diagram_draws_every_move_of_the_table(
    doc: str, draw: Callable[[], str], table: Table, initial: str
) -> None:
    diagram = draw()
    for transition in table:
        for source in transition["source"]:
            assert f"{source} --> {transition['dest']}: {transition['trigger']}" in diagram
    assert diagram.count("-->") == 1 + sum(len(t["source"]) for t in table)
    assert f"[*] --> {initial}" in diagram


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen", ROOT / "scripts" / "gen_state_diagram.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_finds_both_docs_current() -> None:
    assert _script().main(["--check"]) == 0


def test_the_script_rewrites_only_the_generated_block() -> None:
    script = _script()
    stale = f"intro\n{script.BEGIN}\nold\n{script.END}\noutro\n"
    rendered = script.render(stale, refund_mermaid_diagram())
    assert rendered.startswith("intro\n") and rendered.endswith("\noutro\n")
    assert _normalise(refund_mermaid_diagram()) in rendered
    assert "old" not in rendered
