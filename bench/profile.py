"""Profile the plugin's webhook endpoint under load with py-spy (not a runtime dependency).

``python -m bench.profile [--c 64] [--seconds 8] [--db sqlite|postgresql]`` needs
``pip install py-spy`` in the venv. It writes a flame graph (SVG) and py-spy's raw
collapsed stacks under bench/results/, and prints the heaviest frames.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench import seed
from bench.loadgen import run_load, summarize
from bench.run import PLUGIN, RESULTS, Databases, WebhookFeed, _needed
from bench.servers import Server


def _spy(pid: int, seconds: float, out: Path, fmt: str) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cmd = [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200"]
    return subprocess.Popen([*cmd, "-f", fmt, "-o", str(out), "--nonblocking"])


def heaviest(raw: Path, top: int = 40) -> list[tuple[int, str]]:
    """Inclusive sample counts per function from py-spy's raw (collapsed) output."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        for frame in set(stack.split(";")):
            counts[frame.split(" (")[0]] += int(n)
    return [(n, name) for name, n in counts.most_common(top)]


async def main_async(args: argparse.Namespace) -> None:
    dbs = Databases()
    try:
        url = dbs.sqlite("profile") if args.db == "sqlite" else dbs.postgres("profile")
        await seed.create_schema(url)
        refs = [f"pr-{i:06d}" for i in range(_needed(args.requests))]
        await seed.seed_pending(url, refs)
        env = {"BENCH_DB_URL": url}
        with Server(PLUGIN, env, health="/pay/health", name="plugin-profile") as server:
            assert server.proc is not None
            RESULTS.mkdir(parents=True, exist_ok=True)
            out = RESULTS / f"profile-{args.db}-c{args.c}"
            spies = [
                _spy(server.proc.pid, args.seconds, out.with_suffix(".svg"), "flamegraph"),
                _spy(server.proc.pid, args.seconds, out.with_suffix(".txt"), "raw"),
            ]
            feed = WebhookFeed("/pay/webhooks/adyen", refs, seed_value=1)
            result = await run_load(
                server.port, feed, concurrency=args.c, max_requests=args.requests,
                max_seconds=args.seconds,
            )  # fmt: skip
            print(summarize(result))
            await asyncio.gather(*(asyncio.to_thread(s.wait) for s in spies))
        for n, name in heaviest(out.with_suffix(".txt")):
            print(f"{n:6d}  {name}")
        print(f"profile: {out}.svg {out}.txt")
    finally:
        dbs.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--c", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--db", default="sqlite", choices=("sqlite", "postgresql"))
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
