"""Group commit: concurrent submissions share one write, and a bad one fails alone."""

from __future__ import annotations

import asyncio

import pytest

from miniprogram_pay.services.batching import GroupCommitter


class Recorder:
    def __init__(self, *, fail_on: int | None = None, delay: float = 0.01) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.delay = delay

    async def write(self, items: list[int]) -> list[int]:
        await asyncio.sleep(self.delay)  # a commit takes time; others queue meanwhile
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError("bad item")
        self.batches.append(list(items))
        return [item * 10 for item in items]


async def test_concurrent_submissions_share_batches_and_get_their_own_results() -> None:
    recorder = Recorder()
    committer: GroupCommitter[int, int] = GroupCommitter(recorder.write, name="test")
    results = await asyncio.gather(*(committer.submit([i, i + 100]) for i in range(50)))
    assert results == [[i * 10, (i + 100) * 10] for i in range(50)]
    assert sum(len(b) for b in recorder.batches) == 100
    assert len(recorder.batches) < 50  # writes were shared
    await committer.stop()


async def test_a_failing_submission_fails_alone() -> None:
    recorder = Recorder(fail_on=7)
    committer: GroupCommitter[int, int] = GroupCommitter(recorder.write, name="test")
    outcomes = await asyncio.gather(
        *(committer.submit([i]) for i in range(20)), return_exceptions=True
    )
    assert isinstance(outcomes[7], ValueError)
    assert [o for i, o in enumerate(outcomes) if i != 7] == [[i * 10] for i in range(20) if i != 7]
    written = sorted(item for batch in recorder.batches for item in batch)
    assert written == [i for i in range(20) if i != 7]
    await committer.stop()


async def test_batches_are_bounded() -> None:
    recorder = Recorder()
    committer: GroupCommitter[int, int] = GroupCommitter(
        recorder.write, name="test", max_batch_items=8
    )
    await asyncio.gather(*(committer.submit([i]) for i in range(40)))
    assert max(len(b) for b in recorder.batches) <= 8
    await committer.stop()


async def test_stop_finishes_what_is_queued_and_restarts_lazily() -> None:
    recorder = Recorder(delay=0.001)
    committer: GroupCommitter[int, int] = GroupCommitter(recorder.write, name="test")
    pending = [asyncio.create_task(committer.submit([i])) for i in range(10)]
    await asyncio.sleep(0)
    await committer.stop()
    assert [await p for p in pending] == [[i * 10] for i in range(10)]
    assert await committer.submit([5]) == [50]
    await committer.stop()


async def test_empty_submission_writes_nothing() -> None:
    recorder = Recorder()
    committer: GroupCommitter[int, int] = GroupCommitter(recorder.write, name="test")
    assert await committer.submit([]) == []
    assert recorder.batches == []
    await committer.stop()


@pytest.mark.parametrize("count", [1, 3])
async def test_results_match_items_in_order(count: int) -> None:
    committer: GroupCommitter[int, int] = GroupCommitter(Recorder(delay=0).write, name="t")
    assert await committer.submit(list(range(count))) == [i * 10 for i in range(count)]
    await committer.stop()
