"""Markdown tables from a results file: ``python -m bench.report [RESULTS.json]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.servers import ROOT

COLUMNS = {
    "webhook": (
        "db", "workers", "c", "rps", "baseline_rps", "ratio", "applied_rps", "p50_ms", "p99_ms",
        "baseline_p50_ms", "baseline_p99_ms", "lag_p50_ms", "lag_p99_ms", "exactly_once",
        "errors", "loop_cpu_ms", "baseline_loop_cpu_ms", "peak_rss_mb", "rss_per_worker_mb",
        "baseline_peak_rss_mb",
    ),
    "flow": (
        "users", "rps", "baseline_rps", "ratio", "session_p50_ms", "session_baseline_p50_ms",
        "session_added_ms", "payments_p50_ms", "payments_baseline_p50_ms", "payments_added_ms",
        "details_p50_ms", "details_baseline_p50_ms", "details_added_ms", "errors",
        "loop_cpu_ms", "baseline_loop_cpu_ms", "peak_rss_mb",
    ),
    "status": (
        "db", "rows", "rps", "baseline_rps", "ratio", "p50_ms", "p99_ms", "baseline_p50_ms",
        "growth_p50", "errors", "loop_cpu_ms", "baseline_loop_cpu_ms", "peak_rss_mb",
        "rss_per_worker_mb",
    ),
}  # fmt: skip


def table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench/results/latest-full.json"
    data = json.loads(path.read_text())
    for workload in ("import", "webhook", "durability", "flow", "status", "memory"):
        rows = [r for r in data["results"] if r["workload"] == workload]
        if not rows:
            continue
        columns = COLUMNS.get(workload) or tuple(k for k in rows[0] if k != "workload")
        print(f"\n### {workload}\n\n{table(rows, columns)}")
    print(f"\nsteps (s): {data.get('step_seconds')}, total {data.get('total_seconds')} s")
    print(f"load average at start {data['machine']['load_avg_at_start']}")


if __name__ == "__main__":
    main()
