"""The progress callback every calibration procedure takes."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int, str], None]
"""``progress(done, total, what)``."""
