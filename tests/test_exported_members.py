"""The front door: ``miniprogram_pay.__all__`` lists exactly the public names, and each exists.

Like httpx's ``tests/test_exported_members.py``: a name imported into the package
without being added to ``__all__`` (or the reverse) fails here.
"""

from __future__ import annotations

from types import ModuleType

import miniprogram_pay

INCLUDED_PRIVATE_MEMBERS = {"__version__"}


def _public_members() -> set[str]:
    # The front door is lazy: dir() lists what it offers, getattr() loads it.
    return {
        name
        for name in dir(miniprogram_pay)
        if (not name.startswith("_") or name in INCLUDED_PRIVATE_MEMBERS)
        # Subpackages appear once imported; these helpers of the lazy door are not exports.
        and not isinstance(getattr(miniprogram_pay, name), ModuleType)
        and name not in {"annotations", "importlib", "TYPE_CHECKING", "Any"}
    }


def test_all_lists_exactly_the_public_members() -> None:
    assert set(miniprogram_pay.__all__) == _public_members()
    assert len(miniprogram_pay.__all__) == len(set(miniprogram_pay.__all__))
    assert miniprogram_pay.__all__ == sorted(miniprogram_pay.__all__)


def test_every_exported_member_exists() -> None:
    for name in miniprogram_pay.__all__:
        assert getattr(miniprogram_pay, name, None) is not None, name


def test_importing_the_package_loads_no_dependency() -> None:
    import subprocess
    import sys

    code = "import sys, miniprogram_pay; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    for heavy in ("sqlalchemy", "alembic", "mako", "pydantic", "httpx", "starlette"):
        assert f"'{heavy}'" not in loaded, heavy
