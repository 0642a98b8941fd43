"""docs/operations.md: its alert rules name metrics the plugin serves, its log set-up works, and
every metric the plugin serves is in its table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.docs.snippets import ROOT
from tests.world import ADMIN_KEY, world

ADMIN = {"X-Admin-Key": ADMIN_KEY}

OPERATIONS = ROOT / "docs" / "operations.md"
YAML_FENCE = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)
METRIC = re.compile(r"\bminiprogram_pay_[a-z_]+")
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def yaml_blocks() -> list[Any]:
    text = OPERATIONS.read_text(encoding="utf-8")
    return [yaml.safe_load(block) for block in YAML_FENCE.findall(text)]


def alert_rules() -> list[dict[str, Any]]:
    [groups] = [block for block in yaml_blocks() if isinstance(block, dict) and "groups" in block]
    return [rule for group in groups["groups"] for rule in group["rules"]]


def family(name: str) -> str:
    """The family a sample or series name belongs to (``x_total``, ``x_bucket``: ``x``)."""
    for suffix in SUFFIXES:
        name = name.removesuffix(suffix)
    return name


async def test_the_alert_rules_name_metrics_the_plugin_serves(sqlite_url: str) -> None:
    async with world(sqlite_url) as w:
        headers = await w.login("alice")
        assert (await w.pay_order(headers, "order-ops")).status_code == 200
        answer = await w.client.get("/pay/metrics", headers=ADMIN)
    # prometheus-client's *_created series (each counter's start time) need no words.
    parsed = text_string_to_metric_families(answer.text)
    served = {f.name for f in parsed if not f.name.endswith("_created")}
    rules = alert_rules()
    assert len(rules) >= 8
    for rule in rules:
        assert rule["alert"].startswith("MiniProgramPay") and rule["expr"], rule
        named = {family(name) for name in METRIC.findall(rule["expr"])}
        assert named, rule["alert"]
        assert named <= served, (rule["alert"], sorted(named - served))
    documented = {family(n) for n in METRIC.findall(OPERATIONS.read_text(encoding="utf-8"))}
    assert served <= documented, f"served but not in operations.md: {sorted(served - documented)}"


def test_the_documented_log_config_writes_json_lines_with_the_request_id(tmp_path: Path) -> None:
    blocks = yaml_blocks()
    [config] = [block for block in blocks if isinstance(block, dict) and "formatters" in block]
    path = tmp_path / "log-config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    program = (
        "import json, logging.config, sys\n"
        "from miniprogram_pay.observability.context import bound_request_id\n"
        "logging.config.dictConfig(json.load(open(sys.argv[1])))\n"
        "with bound_request_id('req-9'):\n"
        "    logging.getLogger('miniprogram_pay.payments').info('payment %s', 'order-1')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    [line] = done.stderr.splitlines()
    entry = json.loads(line)
    assert (entry["message"], entry["request_id"], entry["level"]) == (
        "payment order-1",
        "req-9",
        "INFO",
    )
