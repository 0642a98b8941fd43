"""Regenerate the state diagram in docs/state-machine.md from the transition table.

The diagram is drawn by ``miniprogram_pay.domain.mermaid_diagram()`` from
``TRANSITIONS``; this script writes it between the two marker comments of the
document, so the picture merchants read is the table the code enforces.

Usage::

    python scripts/gen_state_diagram.py          # rewrite the block
    python scripts/gen_state_diagram.py --check  # exit 1 if the block is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "state-machine.md"
BEGIN = "<!-- BEGIN GENERATED: python scripts/gen_state_diagram.py -->"
END = "<!-- END GENERATED -->"


def normalise(diagram: str) -> str:
    """The diagram without trailing whitespace on any line or at the end."""
    return "\n".join(line.rstrip() for line in diagram.strip("\n").splitlines()).rstrip("\n")


def render(document: str, diagram: str) -> str:
    """``document`` with the generated block replaced by ``diagram``."""
    head, found_begin, rest = document.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not found_begin or not found_end:
        raise SystemExit(f"{DOC}: markers {BEGIN!r} and {END!r} not found")
    block = f"{BEGIN}\n```mermaid\n{normalise(diagram)}\n```\n{END}"
    return head + block + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the doc is out of date")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from miniprogram_pay.domain import mermaid_diagram

    current = DOC.read_text(encoding="utf-8")
    wanted = render(current, mermaid_diagram())
    if current == wanted:
        print(f"{DOC.relative_to(ROOT)} is up to date")
        return 0
    if args.check:
        print(f"{DOC.relative_to(ROOT)} is out of date: run python scripts/gen_state_diagram.py")
        return 1
    DOC.write_text(wanted, encoding="utf-8")
    print(f"rewrote the state diagram in {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
