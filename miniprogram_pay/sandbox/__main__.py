"""Run the sandbox: ``python -m miniprogram_pay.sandbox --port 8100 --webhook-url URL``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from miniprogram_pay.sandbox.app import create_sandbox_app
from miniprogram_pay.sandbox.config import SandboxConfig

DEFAULT_PORT = 8100


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Simulated Adyen Checkout + WeChat for testing.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--webhook-url", help="the merchant's POST /webhooks/adyen URL")
    parser.add_argument("--response-style", choices=("redirect", "action", "sdk"), default="action")
    parser.add_argument("--scenario", default="authorised", help="default scenario")
    parser.add_argument("--webhook-delay", type=float, default=0.0, help="seconds")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the sandbox with uvicorn until interrupted."""
    import uvicorn

    args = parse_args(argv)
    config = SandboxConfig(
        webhook_url=args.webhook_url,
        response_style=args.response_style,
        default_scenario=args.scenario,
        webhook_delay_seconds=args.webhook_delay,
    )
    uvicorn.run(create_sandbox_app(config), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
