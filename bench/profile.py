"""Profile the plugin: the webhook endpoint under py-spy, or where a flow's time goes.

``python -m bench.profile [--c 64] [--seconds 8] [--db sqlite|postgresql]`` needs
``pip install py-spy`` in the venv. It writes a flame graph (SVG) and py-spy's raw
collapsed stacks under bench/results/, and prints the heaviest frames.

``python -m bench.profile --workload flow [--users 1] [--seconds 8] [--no-spy]`` runs the payment
flow against the sandbox with the plugin traced (``bench/trace.py``) and prints, per
endpoint, the median of each part of a request's wall-clock time: the sandbox call,
each unit of work's wait for its thread, its statements, its commit with the hop back,
and the rest (the event loop's own work and its waits on other tasks); with each
lane's ``run_cpu`` (the CPU its units' statements and Python used in their thread, out
of ``run``) and each thread's share of one processor while requests were served.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench import seed
from bench.loadgen import run_load, summarize
from bench.run import PLUGIN, QUICK, RESULTS, SANDBOX, Databases, WebhookFeed, _flows, _needed
from bench.servers import Server


def _spy(
    pid: int, seconds: float, out: Path, fmt: str, *, gil: bool = False
) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cmd = [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200"]
    if gil:  # only the thread holding the interpreter lock: what waits for it drops out
        cmd.append("--gil")
    return subprocess.Popen([*cmd, "-f", fmt, "-o", str(out), "--nonblocking"])


def heaviest(raw: Path, top: int = 40) -> list[tuple[int, str]]:
    """Inclusive sample counts per function from py-spy's raw (collapsed) output."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue  # a stack py-spy could not finish writing
        for frame in set(stack.split(";")):
            counts[frame.split(" (")[0]] += int(n)
    return [(n, name) for name, n in counts.most_common(top)]


LOOP_ROOT = "Runner.run"  # the frame every stack of uvicorn's event loop thread passes


def loop_leaves(raw: Path, top: int = 15) -> list[tuple[int, str]]:
    """The event loop thread's samples by the function they were in (self, not inclusive).

    Without ``--gil`` a sample is also taken while the thread waits to take the
    interpreter lock back after a system call; with it, only while it holds it.
    """
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if n.isdigit() and any(f.startswith(LOOP_ROOT + " (") for f in frames):
            counts[frames[-1]] += int(n)
    return [(n, name) for name, n in counts.most_common(top)]


async def main_async(args: argparse.Namespace) -> None:
    dbs = Databases()
    try:
        url = dbs.sqlite("profile") if args.db == "sqlite" else dbs.postgres("profile")
        await seed.create_schema(url)
        refs = [f"pr-{i:06d}" for i in range(_needed(args.requests))]
        await seed.seed_pending(url, refs)
        RESULTS.mkdir(parents=True, exist_ok=True)
        trace = RESULTS / f"trace-webhook-{args.db}.jsonl"
        env = {"BENCH_DB_URL": url, "BENCH_TRACE": str(trace)}
        out = RESULTS / f"profile-{args.db}-c{args.c}"
        with Server(PLUGIN, env, health="/pay/health", name="plugin-profile") as server:
            assert server.proc is not None
            spies = (
                [
                    _spy(
                        server.proc.pid,
                        args.seconds,
                        out.with_suffix(".svg"),
                        "flamegraph",
                        gil=args.gil,
                    ),
                    _spy(
                        server.proc.pid, args.seconds, out.with_suffix(".txt"), "raw", gil=args.gil
                    ),
                ]
                if args.spy
                else []
            )
            feed = WebhookFeed("/pay/webhooks/adyen", refs, seed_value=1)
            result = await run_load(
                server.port, feed, concurrency=args.c, max_requests=args.requests,
                max_seconds=args.seconds,
            )  # fmt: skip
            print(summarize(result))
            await asyncio.gather(*(asyncio.to_thread(s.wait) for s in spies))
        if spies:
            for n, name in heaviest(out.with_suffix(".txt")):
                print(f"{n:6d}  {name}")
            print(f"profile: {out}.svg {out}.txt")
        print_trace(trace)
    finally:
        dbs.close()


def _median(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 2) if values else 0.0


PARTS = {
    "queue": ("submitted", "thread_start"),
    "run": ("thread_start", "thread_end"),
    "back": ("thread_end", "resumed"),
}


def _split(record: dict[str, Any]) -> tuple[dict[str, float], dict[str, int]]:
    """One request's wall-clock time up to its answer, in parts; and its units by lane."""
    answered = record.get("answered", record["end"])
    split: dict[str, float] = {}
    units: dict[str, int] = {}
    for event in record["events"]:
        if event.get("resumed", event.get("end", 0.0)) > answered:
            continue  # after the answer (its background task)
        kind = event["kind"]
        if kind in ("adyen", "wechat"):
            split[kind] = split.get(kind, 0.0) + event["end"] - event["start"]
            continue
        units[kind] = units.get(kind, 0) + 1
        for part, (a, b) in PARTS.items():
            split[f"{kind}_{part}"] = split.get(f"{kind}_{part}", 0.0) + event[b] - event[a]
    total = answered - record["start"]
    split["rest"] = total - sum(split.values())
    split["answer"] = total
    split["loop_cpu"] = record["loop_cpu"]
    for event in record["events"]:  # the units' CPU: part of "run", not a part of its own
        if "run_cpu" in event and event.get("resumed", 0.0) <= answered:
            key = f"{event['kind']}_run_cpu"
            split[key] = split.get(key, 0.0) + event["run_cpu"]
    return split, units


def print_trace(trace: Path) -> None:
    """The trace's summaries: per endpoint, per unit of work, per thread."""
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    for name, parts in summarise_trace(records).items():
        print(name, " ".join(f"{k}={v}" for k, v in parts.items()))
    print_units(records)
    print_threads(trace)


def summarise_trace(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per path: the median milliseconds of each part of a request, and its units."""
    by_path: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_path.setdefault(record["path"], []).append(record)
    summary: dict[str, dict[str, float]] = {}
    for name, requests in sorted(by_path.items()):
        parts: dict[str, list[float]] = {}
        counts: dict[str, list[int]] = {}
        for record in requests:
            split, units = _split(record)
            for key, value in split.items():
                parts.setdefault(key, []).append(value)
            for key, n in units.items():
                counts.setdefault(key, []).append(n)
        summary[name] = {
            "n": len(requests),
            **{f"{k}_units": statistics.median(v) for k, v in sorted(counts.items())},
            **{k: _median(v) for k, v in sorted(parts.items())},
        }
    return summary


def print_units(records: list[dict[str, Any]]) -> None:
    """Per unit of work (its function), the median milliseconds of each of its parts."""
    seen: dict[tuple[float, float], dict[str, Any]] = {}
    for record in records:
        for event in record["events"]:
            if "what" in event and "resumed" in event:
                seen[event["submitted"], event["thread_start"]] = event  # shared: many records
    by_what: dict[str, list[dict[str, Any]]] = {}
    for event in seen.values():
        by_what.setdefault(f"{event['kind'].split('_')[0]} {event['what']}", []).append(event)
    for name, events in sorted(by_what.items(), key=lambda kv: -len(kv[1])):
        parts = {part: _median([e[b] - e[a] for e in events]) for part, (a, b) in PARTS.items()}
        cpu = _median([e["run_cpu"] for e in events])
        line = " ".join(f"{k}={v}" for k, v in parts.items())
        print(f"unit {name} n={len(events)} {line} run_cpu={cpu}")


def print_threads(trace: Path) -> None:
    """Each thread's share of one processor while requests were served (bench/trace.py)."""
    threads = Path(f"{trace}.threads.json")
    found = json.loads(threads.read_text()) if threads.exists() else {}
    if found:
        shares = " ".join(f"{name!r}={share}" for name, share in sorted(found["share"].items()))
        print(f"threads' CPU (share of one processor over {found['seconds']} s): {shares}")


async def flow_profile(args: argparse.Namespace) -> None:
    dbs = Databases()
    try:
        url = dbs.sqlite("profile-flow")
        await seed.create_schema(url)
        trace = RESULTS / "trace-flow.jsonl"
        RESULTS.mkdir(parents=True, exist_ok=True)
        sandbox = Server(SANDBOX, {}, health="/_sandbox/scenarios", name="sandbox-profile")
        env = {"BENCH_DB_URL": url, "BENCH_SANDBOX_URL": sandbox.url, "BENCH_TRACE": str(trace)}
        target = Server(PLUGIN, env, health="/pay/health", name="plugin-profile-flow")
        sandbox.env["BENCH_WEBHOOK_URL"] = f"{target.url}/pay/webhooks/adyen"
        plan = dataclasses.replace(QUICK, flow_seconds=args.seconds, flow_max=args.requests)
        with sandbox, target:
            assert target.proc is not None
            out = RESULTS / f"profile-flow-u{args.users}.txt"
            spy = (
                _spy(target.proc.pid, args.seconds, out, "raw", gil=args.gil) if args.spy else None
            )
            _, done, elapsed, _, errors = await _flows(
                target.port, "pf-", plan, args.users, plugin=True
            )
            if spy is not None:
                await asyncio.to_thread(spy.wait)
            await asyncio.sleep(0.5)  # the last webhooks and marks
        print(f"flows={done} in {elapsed:.1f} s, errors={errors}")
        for n, name in heaviest(out, top=args.top) if spy is not None else ():
            print(f"{n:6d}  {name}")
        if spy is not None:
            leaves = loop_leaves(out)
            print(
                f"event loop, self samples ({sum(n for n, _ in leaves)} in the top {len(leaves)}):"
            )
            for n, name in leaves:
                print(f"{n:6d}  {name}")
        print_trace(trace)
    finally:
        dbs.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--c", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--db", default="sqlite", choices=("sqlite", "postgresql"))
    parser.add_argument("--workload", default="webhook", choices=("webhook", "flow"))
    parser.add_argument("--users", type=int, default=1)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--no-spy", dest="spy", action="store_false", help="trace only, no py-spy")
    parser.add_argument(
        "--gil", action="store_true", help="py-spy samples only the thread holding the GIL"
    )
    args = parser.parse_args()
    asyncio.run(flow_profile(args) if args.workload == "flow" else main_async(args))


if __name__ == "__main__":
    main()
