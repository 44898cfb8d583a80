"""Run every benchmark and print one line per measurement."""

from __future__ import annotations

import asyncio
import logging

from bench import core_overhead, slack_throughput


async def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    for line in await core_overhead.run():
        print(line, flush=True)
    for line in await slack_throughput.run():
        print(line, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
