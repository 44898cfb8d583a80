"""The benchmarks still run (on a few messages): `make bench` is not in CI, so its code is kept honest here.
No timing is asserted; the numbers themselves are for `make bench` to print."""

from __future__ import annotations

import pytest

from bench import core_overhead, slack_throughput


async def test_core_overhead_measures_every_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core_overhead, "MESSAGES", 12)
    monkeypatch.setattr(core_overhead, "TURNS", 4)
    overheads = await core_overhead.core_overhead()
    assert len(overheads) == 12 and all(o >= 0 for o in overheads)
    share, cached, prompt = await core_overhead.cacheable_share()
    assert 0 < cached < prompt and 0 < share < 1


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_slack_throughput_times_every_conversation(backend: str) -> None:
    rate, overheads = await slack_throughput.one_run(backend, 3)
    assert rate > 0
    assert len(overheads) == 3
