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


SMALL = slack_throughput.Load("small", 3, think=0.05, seconds=0.5)


@pytest.mark.parametrize("target", ["floor", "sqlite", "postgres"])
async def test_slack_throughput_times_every_answer(target: str) -> None:
    result = await slack_throughput.one_run(target, SMALL)
    # Every thread got at least its first answer, none was lost, and the process's CPU was measured.
    assert result.lost == 0 and result.answered >= 3
    assert result.cpu_seconds >= 0 and result.rate > 0
    if target == "floor":
        assert result.counts is None
    else:
        # The store's statements were counted through /metrics: a message takes at least one write.
        assert result.counts is not None
        assert result.per_message("transactions") is not None and result.per_message("transactions") >= 1


def test_the_table_shows_ratios_to_the_floor() -> None:
    results = []
    for load in slack_throughput.LOADS:
        for target, latency in (("floor", 0.004), ("sqlite", 0.008)):
            result = slack_throughput.Result(target, load, latencies=[latency] * 10, seconds=1.0, cpu_seconds=0.01)
            results.append(result)
    lines = slack_throughput.table(results)
    assert any("x2.00" in line and line.strip().startswith("sqlite") for line in lines)
