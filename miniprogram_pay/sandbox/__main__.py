"""``python -m miniprogram_pay.sandbox``: the same as ``miniprogram-pay sandbox``."""

from __future__ import annotations

import sys

from miniprogram_pay.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["sandbox", *sys.argv[1:]]))
