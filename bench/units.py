"""The storage alone: one unit of work at a time, in-process, against a baseline unit.

``python -m bench.units [--db sqlite|postgresql] [--n 400] [--rounds 3]`` seeds ``n``
Pending payments through the package's storage, then times, one at a time in one
process (no HTTP, no other load):

- ``webhook``: ``InboxStore.take`` of one new AUTHORISATION item, the unit a webhook
  request runs (stored and applied under one commit);
- ``status``: ``OrderStore.status``, the read behind ``GET /payments/{reference}``;
- ``webhook_batch`` (``--batch 32``; 0 leaves it out): ``InboxStore.take`` of that many
  new items at once, the unit concurrent webhooks share (group commit); its time is per
  item, so its ratio says how many bare one-row commits fit in the time of one item;
- ``baseline``: one ``INSERT ... ON CONFLICT DO NOTHING`` and its commit on a bare
  driver connection (``sqlite3`` at the package's ``synchronous=FULL`` with
  ``BEGIN IMMEDIATE``; psycopg as it comes), in a thread of its own: the same hop
  from the event loop, none of the package's code, the least a durable webhook does.

``--growth`` times instead the status read as the tables grow, as the HTTP status
workload seeds them (10^4 orders, then 10^6): ``OrderStore.status`` of random
references (at 10^6 from the whole table, old rows and new), its statements alone,
the six reference statements (each finding the order by itself), and the baseline's
one indexed ``SELECT`` of the payment on the bare driver, interleaved read by read,
and prints each one's median at both sizes and its growth (10^6 over 10^4).

The three are interleaved in rounds (each round runs every kind on fresh items), so a
noisy moment falls on all of them. It prints, per kind, the median milliseconds, the
ratio of the baseline's median to it (as the HTTP workloads' ratios: 1.0 is the
baseline's speed, above is faster), and per unit its statements and (PostgreSQL) its
waits for the server, from ``Database.counts()`` (the baseline's are not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import random
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from bench import seed
from bench.baseline import READ as BASELINE_READ_SQL
from bench.run import Databases
from miniprogram_pay.storage import InboxItem, Storage
from miniprogram_pay.storage.engine import Database, UnitCounts
from miniprogram_pay.storage.orders import STATUS_STATEMENTS, status_rows

# The baseline app's status read, as its SQL text (":ref" its one parameter).
BASELINE_READ = str(BASELINE_READ_SQL)


class Bare:
    """The baseline's connection: the driver alone, in one thread of its own."""

    def __init__(self, url: str) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-bare")
        self.sqlite = url.startswith("sqlite")
        self.url = url
        self.connection: Any = None
        self.read_sql = BASELINE_READ.replace(":ref", "?" if self.sqlite else "%s")

    def _connect(self) -> Any:
        if self.sqlite:
            connection = sqlite3.connect(self.url.split("///", 1)[1], isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            return connection
        return psycopg.connect(self.url.replace("postgresql+psycopg://", "postgresql://"))

    def _insert(self, key: str) -> None:
        if self.connection is None:
            self.connection = self._connect()
        if self.sqlite:
            self.connection.execute("BEGIN IMMEDIATE")
            self.connection.execute(
                "INSERT INTO bench_unit (k) VALUES (?) ON CONFLICT DO NOTHING", (key,)
            )
            self.connection.execute("COMMIT")
            return
        self.connection.execute(
            "INSERT INTO bench_unit (k) VALUES (%s) ON CONFLICT DO NOTHING", (key,)
        )
        self.connection.commit()

    async def insert(self, key: str) -> None:
        await asyncio.get_running_loop().run_in_executor(self.pool, self._insert, key)

    def _read(self, reference: str) -> Any:
        if self.connection is None:
            self.connection = self._connect()
        row = self.connection.execute(self.read_sql, (reference,)).fetchone()
        if not self.sqlite:
            self.connection.rollback()  # as the baseline's read: no transaction left open
        return row

    async def read(self, reference: str) -> Any:
        """The baseline's status read: one indexed ``SELECT`` of the payment."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._read, reference)

    def close(self) -> None:
        self.pool.submit(lambda: self.connection and self.connection.close()).result()
        self.pool.shutdown()


def _item(reference: str) -> InboxItem:
    return InboxItem(
        dedup_key=hashlib.sha256(reference.encode()).hexdigest(),
        psp_reference=seed.psp_for(reference),
        merchant_reference=reference,
        event_code="AUTHORISATION",
        success=True,
        amount_value=seed.AMOUNT.value,
        amount_currency=seed.AMOUNT.currency,
        reason=None,
        raw_json='{"eventCode":"AUTHORISATION"}',
    )


def _waits(counts: UnitCounts) -> int:
    return counts.write_waits + counts.read_waits


async def _timed(
    database: Database, call: Callable[[], Awaitable[Any]], tally: dict[str, float]
) -> float:
    before = database.counts()
    started = time.perf_counter()
    await call()
    elapsed = time.perf_counter() - started
    after = database.counts()
    tally["statements"] += after.statements - before.statements
    tally["waits"] += _waits(after) - _waits(before)
    tally["units"] += 1
    return elapsed


def _calls(
    bare: Bare, storage: Storage, key: str, reference: str
) -> dict[str, Callable[[], Awaitable[Any]]]:
    """One round's three units, each on items of its own."""
    return {
        "baseline": lambda: bare.insert(key),
        "webhook": lambda: storage.inbox.take([_item(reference)], outbox_lease_seconds=30),
        "status": lambda: storage.orders.status(reference),
    }


async def measure(url: str, n: int, rounds: int, batch: int = 0) -> dict[str, dict[str, float]]:
    await seed.create_schema(url)
    database = Database(url)
    await database.run_sync(
        lambda c: c.exec_driver_sql("CREATE TABLE IF NOT EXISTS bench_unit (k TEXT PRIMARY KEY)")
    )
    storage = Storage.over(database)
    bare = Bare(url)
    times: dict[str, list[float]] = {"webhook": [], "status": [], "baseline": []}
    if batch:
        times["webhook_batch"] = []
    tally = {kind: {"statements": 0.0, "waits": 0.0, "units": 0.0} for kind in times}
    try:
        for r in range(rounds):
            references = [f"bu-{r}-{i:05d}" for i in range(n)]
            batched = [f"bb-{r}-{i:05d}" for i in range(n)] if batch else []
            await seed.seed_pending(url, references + batched)
            for i, reference in enumerate(references):
                calls = _calls(bare, storage, f"{r}-{i}", reference)
                for kind, call in calls.items():
                    times[kind].append(await _timed(database, call, tally[kind]))
                if batch and (i + 1) % batch == 0:  # one batch after every `batch` rounds
                    take = functools.partial(
                        storage.inbox.take,
                        [_item(ref) for ref in batched[i + 1 - batch : i + 1]],
                        outbox_lease_seconds=30,
                    )
                    elapsed = await _timed(database, take, tally["webhook_batch"])
                    times["webhook_batch"].append(elapsed / batch)
    finally:
        bare.close()
        await database.dispose()
    base = statistics.median(times["baseline"])
    return {
        kind: {
            "samples": len(values),
            "p50_ms": round(statistics.median(values) * 1000, 3),
            "ratio": round(base / statistics.median(values), 3),
            "statements": round(tally[kind]["statements"] / tally[kind]["units"], 1),
            "waits": round(tally[kind]["waits"] / tally[kind]["units"], 1),
        }
        for kind, values in times.items()
    }


async def growth(
    url: str, reads: int, sizes: tuple[int, int] = (10_000, 1_000_000)
) -> dict[str, dict[str, float]]:
    """Each kind of ``_growth_calls``' median at each size of ``sizes``, and its growth."""
    small, large = sizes
    await seed.create_schema(url)
    database = Database(url)
    storage = Storage.over(database)
    bare = Bare(url)
    results: dict[str, dict[str, float]] = {}
    rng = random.Random(7)
    loaded = 0
    try:
        for size in sizes:
            started = time.perf_counter()
            seed.bulk_payments(url, size - loaded, f"st-{size:08d}-")
            print(f"bench: seeded {size:,} orders in {time.perf_counter() - started:.0f} s",
                  flush=True)  # fmt: skip
            loaded = size
            references = seed.status_references(size, small)
            calls = _growth_calls(storage, bare)
            times: dict[str, list[float]] = {kind: [] for kind in calls}
            for i in range(reads + 200):  # the first 200 warm the caches, untimed
                reference = references[rng.randrange(len(references))]
                kinds = list(calls) if i % 2 else list(reversed(calls))  # no kind always first
                for kind in kinds:
                    began = time.perf_counter()
                    found = await calls[kind](reference)
                    if i >= 200:
                        times[kind].append(time.perf_counter() - began)
                    assert found, reference
            results[str(size)] = {k: statistics.median(v) * 1000 for k, v in times.items()}
    finally:
        bare.close()
        await database.dispose()
    return {
        kind: {
            "p50_ms_small": round(results[str(small)][kind], 3),
            "p50_ms_large": round(results[str(large)][kind], 3),
            "growth": round(results[str(large)][kind] / results[str(small)][kind], 3),
        }
        for kind in results[str(small)]
    }


def _growth_calls(storage: Storage, bare: Bare) -> dict[str, Callable[[str], Awaitable[Any]]]:
    """``status``: the whole read; ``status_rows``: its statements alone, as the package
    runs them; ``six_finds``: the six reference statements, each finding the order by
    itself (``STATUS_STATEMENTS``), the rows of both held equal by the tests."""

    def rows(reference: str) -> Awaitable[list[list[Any]]]:
        return storage.database.read(lambda unit: status_rows(unit, reference))

    def six(reference: str) -> Awaitable[list[list[Any]]]:
        params = {"reference": reference}
        return storage.database.read(
            lambda unit: [unit.run(sql, params).all() for sql in STATUS_STATEMENTS]
        )

    return {
        "status": storage.orders.status,
        "status_rows": rows,
        "six_finds": six,
        "baseline": bare.read,
    }


async def main_async(args: argparse.Namespace) -> None:
    dbs = Databases()
    try:
        url = dbs.sqlite("units") if args.db == "sqlite" else dbs.postgres("units")
        if args.growth:
            results = await growth(url, args.reads)
        else:
            results = await measure(url, args.n, args.rounds, args.batch)
    finally:
        dbs.close()
    for kind, figures in results.items():
        line = " ".join(f"{k}={v}" for k, v in figures.items())
        print(f"bench: units db={args.db} kind={kind} {line}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="postgresql", choices=("sqlite", "postgresql"))
    parser.add_argument("--n", type=int, default=400, help="payments per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32, help="items per batched take; 0: none")
    parser.add_argument(
        "--growth", action="store_true", help="the status read at 10^4 and 10^6 orders"
    )
    parser.add_argument("--reads", type=int, default=3000, help="status reads per size")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
