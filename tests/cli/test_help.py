"""The command line behaves like one: --version, help on every option, one-line errors."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from miniprogram_pay import __version__
from miniprogram_pay.cli import Printer, build_parser, main
from tests.cli.conftest import Run


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _parsers(child)
    return found


def test_every_option_of_every_command_has_help() -> None:
    for parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(choice.help for choice in action._choices_actions), parser.prog
                continue
            assert action.help, f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"miniprogram-pay {__version__}\n"


def test_the_sandbox_is_a_subcommand_and_lists_its_scenarios(run_cli: Run) -> None:
    result = run_cli("sandbox", "--help")
    assert result.returncode == 0
    assert "usage: miniprogram-pay sandbox" in result.stdout
    squeezed = "".join(result.stdout.split())  # help text wraps at hyphens
    assert "failure-then-success" in squeezed and "offer-closed" in squeezed
    module = subprocess.run(
        [sys.executable, "-m", "miniprogram_pay.sandbox", "--help"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert "__main__.py" not in module.stdout
    assert "usage: miniprogram-pay sandbox" in module.stdout


def test_an_unknown_scenario_is_a_usage_error(run_cli: Run) -> None:
    result = run_cli("sandbox", "--scenario", "nope")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_a_wide_label_keeps_a_gap(capsys: pytest.CaptureFixture[str]) -> None:
    Printer().line("AUTHORISATION success=false", "shop-A1001, CNY 11.30")
    assert "success=false  shop-A1001" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("postgresql://shop@127.0.0.1/shop", "postgresql+psycopg://"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///"),
        ("mysql://x", "sqlite+aiosqlite:///path.db or postgresql+psycopg://"),
    ],
)
def test_a_database_url_the_plugin_cannot_use_is_one_line(run_cli: Run, url: str, fix: str) -> None:
    result = run_cli("serve", "--sandbox", "--port", "0", env={"MINIPROGRAM_PAY_DATABASE_URL": url})
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: MINIPROGRAM_PAY_DATABASE_URL")
    assert fix in result.stderr
    assert result.stderr.count("\n") == 1


def test_an_unreachable_database_is_one_line_before_the_server_starts(run_cli: Run) -> None:
    env = {"MINIPROGRAM_PAY_DATABASE_URL": "sqlite+aiosqlite:///no/such/dir/x.db"}
    result = run_cli("serve", "--sandbox", "--port", "0", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1


def test_a_missing_order_resolver_is_one_line(run_cli: Run) -> None:
    result = run_cli("serve", "--order-resolver", "no_such_module:resolve", env=_env())
    assert result.returncode == 1
    assert result.stderr.startswith("error: --order-resolver: cannot import 'no_such_module'")
    result = run_cli("serve", "--order-resolver", "resolve", env=_env())
    assert "module:function" in result.stderr


def _env() -> dict[str, str]:
    from miniprogram_pay.sandbox.server import sandbox_environment

    return sandbox_environment("http://127.0.0.1:9")


def test_db_current_and_downgrade(run_cli: Run, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.db'}"
    assert run_cli("db", "upgrade", "--database-url", url).returncode == 0
    current = run_cli("db", "current", "--database-url", url)
    assert current.returncode == 0, current.stderr
    assert "[--database-url]" in current.stdout
    head = current.stdout.split("this version needs")[1].strip()
    assert f"revision                  {head}" in current.stdout
    down = run_cli("db", "downgrade", "base", "--database-url", url)
    assert down.returncode == 0, down.stderr
    assert (
        "none (no miniprogram-pay tables)" in run_cli("db", "current", "--database-url", url).stdout
    )


def test_db_upgrade_without_a_url_says_which_database(run_cli: Run) -> None:
    result = run_cli("db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "sqlite+aiosqlite:///./miniprogram_pay.db" in result.stdout
    assert "MINIPROGRAM_PAY_DATABASE_URL is not set" in result.stdout


@pytest.mark.slow
def test_ctrl_c_exits_130(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MINIPROGRAM_PAY_")}
    clean["MINIPROGRAM_PAY_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    with subprocess.Popen(
        [sys.executable, "-m", "miniprogram_pay", "serve", "--sandbox", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path, env=clean,
    ) as server:  # fmt: skip
        assert server.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "ready" in server.stdout.readline():
                break
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 130
