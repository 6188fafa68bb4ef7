"""A minimal streaming OpenAI client, the reference for `cargo bench --bench openai`'s
slow-server case: N concurrent tasks, each sending its next request when the last one ended,
reading the SSE stream line by line and counting events. About as little work per event as a
Python client can do.

    python3 benches/openai_client.py URL CONCURRENCY REQUESTS

Prints one JSON line: requests, seconds, requests/s, events, CPU seconds.
"""
import asyncio
import json
import resource
import sys
import time

import aiohttp


async def main(url, concurrency, requests):
    body = {
        "model": "mock",
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 16,
        "stream": True,
    }
    left = [requests]
    events = [0]
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0)
    ) as session:

        async def client():
            while left[0] > 0:
                left[0] -= 1
                async with session.post(url, json=body) as resp:
                    async for line in resp.content:
                        if line.startswith(b"data: "):
                            events[0] += 1

        t0 = time.perf_counter()
        c0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.gather(*(client() for _ in range(concurrency)))
        secs = time.perf_counter() - t0
        c1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    print(json.dumps({"requests": requests, "seconds": secs, "rps": requests / secs,
                      "events": events[0], "cpu_s": cpu}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
