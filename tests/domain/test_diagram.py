from __future__ import annotations

import re
from pathlib import Path

from miniprogram_pay.domain.machine import TRANSITIONS, mermaid_diagram

DOC = Path(__file__).resolve().parents[2] / "docs" / "state-machine.md"
REGENERATE = "run `python scripts/gen_state_diagram.py` to regenerate it"
FENCE = re.compile(r"^```mermaid\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).rstrip("\n")


def test_doc_holds_the_generated_diagram() -> None:
    wanted = _normalise(mermaid_diagram())
    blocks = [_normalise(m.group(1)) for m in FENCE.finditer(DOC.read_text(encoding="utf-8"))]
    assert wanted in blocks, f"{DOC.name} does not show the current state diagram; {REGENERATE}"


def test_diagram_draws_every_move_of_the_table() -> None:
    diagram = mermaid_diagram()
    for transition in TRANSITIONS:
        for source in transition["source"]:
            assert f"{source} --> {transition['dest']}: {transition['trigger']}" in diagram
    assert diagram.count("-->") == 1 + sum(len(t["source"]) for t in TRANSITIONS)
