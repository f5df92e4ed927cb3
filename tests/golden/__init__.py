"""Golden byte vectors shared by drivers and emulators (loaded with :func:`load`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def load(name: str) -> dict[str, Any]:
    """The JSON document ``tests/golden/<name>``."""
    return json.loads((HERE / name).read_text())


def frame_cases() -> list[dict[str, Any]]:
    """The CNEA frame vectors, each with its bytes under ``"bytes"``."""
    cases = load("cnea_frames.json")["cases"]
    for case in cases:
        case["bytes"] = bytes.fromhex(case["hex"].replace("|", " "))
    return cases
