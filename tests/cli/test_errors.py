"""Usage and configuration errors: one line on stderr, a non-zero exit code."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from miniprogram_pay.cli import SCHEMA_MODULE, main
from tests.cli.conftest import Run


def test_serve_without_configuration_says_what_is_missing(run_cli: Run) -> None:
    result = run_cli("serve", "--port", "0")
    assert result.returncode == 1
    assert result.stderr.startswith("error: Missing required settings: MINIPROGRAM_PAY_")
    assert "--sandbox" not in result.stdout
    assert result.stderr.count("\n") == 1


def test_serve_rejects_a_bad_setting(run_cli: Run) -> None:
    result = run_cli(
        "serve", "--sandbox", "--port", "0", env={"MINIPROGRAM_PAY_ADYEN_HMAC_KEYS": "zz"}
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: MINIPROGRAM_PAY_ADYEN_HMAC_KEYS")


def test_workers_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--workers", "0"]) == 1
    assert capsys.readouterr().err == "error: --workers must be at least 1\n"


def test_no_command_is_a_usage_error(run_cli: Run) -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "usage: miniprogram-pay" in result.stderr


def test_help_lists_the_commands(run_cli: Run) -> None:
    out = run_cli("--help").stdout
    for command in ("serve", "demo", "webhook", "db"):
        assert command in out


def test_db_upgrade_calls_the_schema_module(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str, str | None]] = []
    fake = types.ModuleType(SCHEMA_MODULE)
    fake.upgrade = lambda url, schema: calls.append((url, schema))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, SCHEMA_MODULE, fake)
    url = "postgresql+psycopg://app:hunter2@db.example/shop"
    assert main(["db", "upgrade", "--database-url", url, "--schema", "pay"]) == 0
    assert calls == [(url, "pay")]
    out = capsys.readouterr().out
    assert "hunter2" not in out
    shown = "upgrading postgresql+psycopg://app:***@db.example/shop (schema pay) [--database-url]"
    assert shown in out
    assert "done" in out


def test_db_upgrade_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str, str | None]] = []
    fake = types.ModuleType(SCHEMA_MODULE)
    fake.upgrade = lambda url, schema: calls.append((url, schema))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, SCHEMA_MODULE, fake)
    monkeypatch.setenv("MINIPROGRAM_PAY_DATABASE_URL", "sqlite+aiosqlite:///./x.db")
    monkeypatch.delenv("MINIPROGRAM_PAY_DATABASE_SCHEMA", raising=False)
    assert main(["db", "upgrade"]) == 0
    assert calls == [("sqlite+aiosqlite:///./x.db", None)]


def test_db_upgrade_failure_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def upgrade(url: str, schema: str | None) -> None:
        raise RuntimeError("relation exists")

    fake = types.ModuleType(SCHEMA_MODULE)
    fake.upgrade = upgrade  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, SCHEMA_MODULE, fake)
    assert main(["db", "upgrade", "--database-url", "sqlite+aiosqlite:///./x.db"]) == 1
    assert capsys.readouterr().err == "error: the upgrade failed: RuntimeError: relation exists\n"


def test_db_upgrade_for_real(run_cli: Run, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'upgrade.db'}"
    result = run_cli("db", "upgrade", "--database-url", url)
    if importlib.util.find_spec(SCHEMA_MODULE) is None:
        assert result.returncode == 1
        assert result.stderr.startswith("error: database migrations are not available")
    else:
        assert result.returncode == 0, result.stderr
        assert "done" in result.stdout
