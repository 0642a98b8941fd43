"""The Python snippets of README.md and docs/*.md, and the environment they run in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Snippet:
    path: Path
    number: int  # 1-based, in the file
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}#{self.number}"


def snippets_of(path: Path) -> list[Snippet]:
    text = path.read_text(encoding="utf-8")
    return [Snippet(path, n, m.group(1)) for n, m in enumerate(FENCE.finditer(text), start=1)]


def all_snippets() -> list[Snippet]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [snippet for path in files for snippet in snippets_of(path)]


def sandbox_variables(database_url: str) -> dict[str, str]:
    """Every MINIPROGRAM_PAY_* variable the docs' quickstarts expect, with sandbox values."""
    from miniprogram_pay.sandbox.server import sandbox_environment

    variables = sandbox_environment("http://sandbox.test", {}, database_url=database_url)
    variables["MINIPROGRAM_PAY_ALLOW_CLIENT_AMOUNT"] = "false"  # the docs pass a resolver
    return variables
