"""A tap on the blocks an acquisition writes, for a follower on another thread (the live
spike raster) that must never hold the writer up.

The writer offers each block once it is written; the tap keeps a copy, at most
``max_blocks`` of them. A follower that falls behind loses the oldest (counted in
:attr:`BlockTap.dropped`), and a paused tap takes nothing: the recording always comes
first. The follower works on memory the writer already had — nothing is read back from the
file (an HDF5 read decompresses with Python's lock held, which stalled the window).
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class BlockTap:
    """Copies of written blocks ((first file row, (n, C) int16 codes)), oldest first."""

    def __init__(self, max_blocks: int = 4) -> None:
        if max_blocks < 1:
            raise ValueError("max_blocks must be at least 1")
        self.max_blocks = max_blocks
        self.dropped = 0
        """Blocks not kept: the follower was behind, or the tap was paused."""
        self.paused = False
        """While True, offered blocks are dropped (the follower yields to the recording)."""
        self.closed = False
        self._blocks: deque[tuple[int, np.ndarray]] = deque()
        self._cond = threading.Condition()

    def offer(self, first_row: int, rows: np.ndarray) -> None:
        """The writer's side: keep a copy of ``rows`` (file rows from ``first_row``); never
        waits for the follower."""
        if self.paused or self.closed:
            self.dropped += 1
            return
        block = rows.copy()
        with self._cond:
            if len(self._blocks) >= self.max_blocks:
                self._blocks.popleft()
                self.dropped += 1
            self._blocks.append((first_row, block))
            self._cond.notify()

    def take(self, timeout_s: float) -> tuple[int, np.ndarray] | None:
        """The follower's side: the oldest block kept, waiting up to ``timeout_s`` for one
        (None: none came, or the tap is closed and empty)."""
        with self._cond:
            if not self._blocks and not self.closed:
                self._cond.wait(timeout_s)
            return self._blocks.popleft() if self._blocks else None

    def close(self, discard: bool = False) -> None:
        """No more blocks will come (the acquisition ended: what is kept can still be taken;
        ``discard``: the follower stopped, the kept copies are let go)."""
        with self._cond:
            self.closed = True
            if discard:
                self._blocks.clear()
            self._cond.notify_all()
