"""``python -m miniprogram_pay``: the same as the ``miniprogram-pay`` command."""

from __future__ import annotations

from miniprogram_pay.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
