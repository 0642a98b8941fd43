"""Regenerate the state diagrams in docs/ from the transition tables.

The payment diagram (docs/state-machine.md) is drawn by
``miniprogram_pay.domain.mermaid_diagram()`` from ``TRANSITIONS``, the refund
diagram (docs/refunds.md) by ``refund_mermaid_diagram()`` from
``REFUND_TRANSITIONS``. This script writes each between the two marker comments
of its document, so the pictures merchants read are the tables the code enforces.

Usage::

    python scripts/gen_state_diagram.py          # rewrite the blocks
    python scripts/gen_state_diagram.py --check  # exit 1 if a block is stale
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- BEGIN GENERATED: python scripts/gen_state_diagram.py -->"
END = "<!-- END GENERATED -->"


def normalise(diagram: str) -> str:
    """The diagram without trailing whitespace on any line or at the end."""
    return "\n".join(line.rstrip() for line in diagram.strip("\n").splitlines()).rstrip("\n")


def render(document: str, diagram: str, name: str = "the document") -> str:
    """``document`` with the generated block replaced by ``diagram``."""
    head, found_begin, rest = document.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not found_begin or not found_end:
        raise SystemExit(f"{name}: markers {BEGIN!r} and {END!r} not found")
    block = f"{BEGIN}\n```mermaid\n{normalise(diagram)}\n```\n{END}"
    return head + block + tail


def diagrams() -> dict[Path, Callable[[], str]]:
    """Each document and the function that draws its diagram."""
    sys.path.insert(0, str(ROOT))
    from miniprogram_pay.domain import mermaid_diagram, refund_mermaid_diagram

    return {
        ROOT / "docs" / "state-machine.md": mermaid_diagram,
        ROOT / "docs" / "refunds.md": refund_mermaid_diagram,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a doc is out of date")
    args = parser.parse_args(argv)
    stale = 0
    for doc, draw in diagrams().items():
        name = doc.relative_to(ROOT)
        current = doc.read_text(encoding="utf-8")
        wanted = render(current, draw(), str(name))
        if current == wanted:
            print(f"{name} is up to date")
        elif args.check:
            print(f"{name} is out of date: run python scripts/gen_state_diagram.py")
            stale += 1
        else:
            doc.write_text(wanted, encoding="utf-8")
            print(f"rewrote the state diagram in {name}")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
