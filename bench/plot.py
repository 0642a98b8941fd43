"""Plot webhook throughput and latency vs concurrency from a results file.

``python -m bench.plot [bench/results/latest-full.json]`` writes
docs/img/webhook-throughput.svg and docs/img/webhook-latency.svg. Needs matplotlib
in the venv (a bench-only extra: ``pip install matplotlib``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.servers import ROOT

IMG = ROOT / "docs" / "img"


def _rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [r for r in data["results"] if r["workload"] == "webhook" and r["db"] == "sqlite"]
    return sorted(rows, key=lambda r: r["c"])


def plot(path: Path) -> list[Path]:
    data = json.loads(path.read_text())
    rows = _rows(data)
    c = [r["c"] for r in rows]
    IMG.mkdir(parents=True, exist_ok=True)
    note = f"SQLite, 1 uvicorn worker, 2 shared cores ({data['started'][:10]})"

    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(c, [r["baseline_rps"] for r in rows], "o-", label="baseline (parse+HMAC+insert)")
    ax.plot(c, [r["rps"] for r in rows], "s-", label="plugin: accepted/s")
    ax.plot(c, [r["applied_rps"] for r in rows], "^--", label="plugin: applied/s")
    ax.set(xscale="log", xlabel="concurrent senders", ylabel="webhooks / s", title=note)
    ax.set_xticks(c, [str(x) for x in c])
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(alpha=0.3)
    out1 = IMG / "webhook-throughput.svg"
    fig.tight_layout()
    fig.savefig(out1)

    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(c, [r["baseline_p50_ms"] for r in rows], "o-", label="baseline p50")
    ax.plot(c, [r["baseline_p99_ms"] for r in rows], "o:", label="baseline p99")
    ax.plot(c, [r["p50_ms"] for r in rows], "s-", label="plugin p50")
    ax.plot(c, [r["p99_ms"] for r in rows], "s:", label="plugin p99")
    ax.axhline(50, color="grey", lw=0.8, ls="--", label="target p99 50 ms")
    ax.set(xscale="log", yscale="log", xlabel="concurrent senders", ylabel="latency (ms)")
    ax.set_title(note)
    ax.set_xticks(c, [str(x) for x in c])
    ax.legend()
    ax.grid(alpha=0.3)
    out2 = IMG / "webhook-latency.svg"
    fig.tight_layout()
    fig.savefig(out2)
    return [out1, out2]


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench/results/latest-full.json"
    for out in plot(path):
        print(f"plot: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
