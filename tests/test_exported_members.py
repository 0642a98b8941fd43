"""The front door: ``miniprogram_pay.__all__`` lists exactly the public names, and each exists.

Like httpx's ``tests/test_exported_members.py``: a name imported into the package
without being added to ``__all__`` (or the reverse) fails here.
"""

from __future__ import annotations

from types import ModuleType

import miniprogram_pay

INCLUDED_PRIVATE_MEMBERS = {"__version__"}


def _public_members() -> set[str]:
    return {
        name
        for name, value in vars(miniprogram_pay).items()
        if (not name.startswith("_") or name in INCLUDED_PRIVATE_MEMBERS)
        # Subpackages appear once imported; the __future__ import is not an export.
        and not isinstance(value, ModuleType)
        and name != "annotations"
    }


def test_all_lists_exactly_the_public_members() -> None:
    assert set(miniprogram_pay.__all__) == _public_members()
    assert len(miniprogram_pay.__all__) == len(set(miniprogram_pay.__all__))
    assert miniprogram_pay.__all__ == sorted(miniprogram_pay.__all__)


def test_every_exported_member_exists() -> None:
    for name in miniprogram_pay.__all__:
        assert getattr(miniprogram_pay, name, None) is not None, name
