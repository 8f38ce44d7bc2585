"""Serve's photo decodes: at most ``threads`` at once, in that many threads of their own, so the memory
they take is bounded by ``threads`` x the per-image decode limit however many clients upload at once.

Before (issue 30, item 5) every request decoded at once in asyncio's default pool: 12 uploads of a
7000x7000 16-bit PNG took the server from 892 MB to 5.37 GB. Threads of their own also bound glibc's
per-thread arenas, which keep what was freed in them: the default pool's threads had left 2.79 GB
resident after that burst."""
from __future__ import annotations

import asyncio
import concurrent.futures

from PIL import Image

PILLOW_BLOCK_BYTES = 64 << 20


class DecodeGate:
    """Runs decodes ``threads`` at a time; ``waiting`` and ``running`` count the requests at each stage
    (for /api/health and the tests)."""

    def __init__(self, threads: int):
        self.threads = threads
        self.waiting = self.running = 0
        self._semaphore: asyncio.Semaphore | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def start(self) -> None:
        # Pillow allocates an image in blocks of this size; over glibc's mmap threshold (32 MiB, set by
        # accel.keep_freed_memory for the model) a large decode's blocks are unmapped when it is freed.
        # At Pillow's default 16 MiB they came from the decode threads' arenas and stayed: 2 threads left
        # +194 MiB resident after 12 uploads of a 7000x7000 16-bit PNG (benchmarks/bench_serve.py --burst-png)
        Image.core.set_block_size(PILLOW_BLOCK_BYTES)
        # the queue is the semaphore's, in the event loop: a request cancelled while it waits never decodes
        self._semaphore = asyncio.Semaphore(self.threads)
        self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="petalnet-decode")

    def stop(self) -> None:
        if self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, fn, *args):
        """``fn(*args)`` in a decode thread, once one is free."""
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self.running -= 1
            self._semaphore.release()
