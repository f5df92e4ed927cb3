"""The session report: one self-contained HTML page (plots inlined) in the session folder.

It shows what each stage did (status, duration, key figures), the array map and example
traces of the recording, the extraction's figures (connectivity matrix, average PSPs) and
its scores against ground truth when there is one, and the imprint's figures (target vs
read conductance, error histogram, array maps) and functional check — the plots the
stages wrote, plus two drawn here from the recording.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from instrument.recording import GAP_FILL, open_recording

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
FIGURES_DIR = "figures"


SKIP_S = 0.5
"""Plots start this late into the recording (past any electroporation artifact), s."""


def _window(rec: object, seconds: float) -> tuple[int, int]:
    rate = rec.sample_rate_hz  # type: ignore[attr-defined]
    n = rec.n_samples  # type: ignore[attr-defined]
    start = min(int(SKIP_S * rate), max(n - int(seconds * rate), 0))
    return start, min(n, start + int(seconds * rate))


def plot_recording(
    session_file: Path, folder: Path, seconds: float = 2.0, n_traces: int = 8
) -> list[Path]:
    """Two figures from one ``seconds`` window of the recording: the 64 × 64 map of each
    electrode's RMS (µV), and the ``n_traces`` most active electrodes in mV against ms."""
    with open_recording(session_file) as rec:
        start, stop = _window(rec, seconds)
        codes = np.asarray(rec.traces[start:stop])
        gain = np.asarray(rec.gain_v, dtype=np.float64)
        offset = np.asarray(rec.offset_v, dtype=np.float64)
        xy = np.asarray(rec.positions_m)
        bad = rec.bad_channels
        rate = rec.sample_rate_hz
    valid = codes != GAP_FILL
    sub = codes[:: max(1, codes.shape[0] // 4000)].astype(np.float64)
    rms = sub.std(axis=0) * np.abs(gain) * 1e6
    spread = (np.percentile(sub, 99.9, axis=0) - np.percentile(sub, 0.1, axis=0)) * np.abs(gain)
    if bad is not None:
        spread[bad] = 0
    spread[~valid.all(axis=0)] = 0
    xs, ys = np.unique(np.round(xy[:, 0], 9)), np.unique(np.round(xy[:, 1], 9))
    ix = np.searchsorted(xs, np.round(xy[:, 0], 9))
    iy = np.searchsorted(ys, np.round(xy[:, 1], 9))
    grid = np.full((ys.size, xs.size), np.nan)
    grid[iy, ix] = rms
    if bad is not None:
        grid[iy[bad], ix[bad]] = np.nan
    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    finite = grid[np.isfinite(grid)]
    image = ax.imshow(
        grid,
        origin="lower",
        cmap="magma",
        norm=matplotlib.colors.LogNorm(
            vmin=max(float(finite.min()) if finite.size else 1.0, 1.0),
            vmax=max(float(finite.max()) if finite.size else 2.0, 2.0),
        ),
    )
    fig.colorbar(image, ax=ax, label="RMS, µV (log)")
    ax.set_title(f"Array map: RMS over {(stop - start) / rate:.1f} s (blank: bad channel)")
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    fig.tight_layout()
    map_png = folder / "array_map.png"
    fig.savefig(map_png, dpi=100)
    plt.close(fig)

    channels = np.argsort(-spread)[:n_traces]
    t_ms = (start + np.arange(codes.shape[0])) / rate * 1e3
    fig, axes = plt.subplots(len(channels), 1, figsize=(8, 1.1 * len(channels) + 0.6), sharex=True)
    for ax, ch in zip(np.atleast_1d(axes), channels, strict=True):
        trace = np.where(valid[:, ch], codes[:, ch] * gain[ch] + offset[ch], np.nan)
        ax.plot(t_ms, trace * 1e3, lw=0.5, color="k")
        ax.set_ylabel(f"ch {ch}\nmV", fontsize=7)
        ax.tick_params(labelsize=7)
    np.atleast_1d(axes)[-1].set_xlabel("time, ms")
    fig.suptitle("Example traces (most active electrodes)", fontsize=9)
    fig.tight_layout()
    traces_png = folder / "example_traces.png"
    fig.savefig(traces_png, dpi=100)
    plt.close(fig)
    return [map_png, traces_png]


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _figures_table(figures: dict[str, Any]) -> str:
    rows = []
    for key, value in figures.items():
        if isinstance(value, dict | list):
            value = json.dumps(value, default=str)
            if len(value) > 400:
                value = value[:400] + "…"
        elif isinstance(value, float):
            value = f"{value:.4g}"
        rows.append(f"<tr><td>{html.escape(str(key))}</td><td>{html.escape(str(value))}</td></tr>")
    return "<table>" + "".join(rows) + "</table>" if rows else ""


CSS = """
body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:.25em .6em;
font-size:.9em;text-align:left;vertical-align:top}
.done{color:#070} .failed{color:#b00} .paused{color:#b60} .pending{color:#777}
figure{display:inline-block;margin:.5em} img{max-width:520px;border:1px solid #eee}
figcaption{font-size:.85em;color:#555} pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
"""


def write_report(folder: Path, state: Any, *, title: str = "") -> Path:
    """Write ``folder/report.html`` from the session state and every figure the stages left."""
    from instrument.session_files import SESSION_FILE

    session_file = folder / SESSION_FILE
    figures_dir = folder / FIGURES_DIR
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>brainpaste session "
        f"{html.escape(folder.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>brainpaste session {html.escape(title or folder.name)}</h1>",
        "<h2>Stages</h2><table><tr><th>stage</th><th>status</th><th>duration</th>"
        "<th>attempts</th><th>error</th></tr>",
    ]
    for name, stage in state.stages.items():
        parts.append(
            f"<tr><td>{name}</td><td class='{stage.status}'>{stage.status}</td>"
            f"<td>{stage.duration_s:.1f} s</td><td>{stage.attempts}</td>"
            f"<td>{html.escape(stage.error)}</td></tr>"
        )
    parts.append("</table>")

    def section(title_: str, stage_name: str, images: list[tuple[Path, str]]) -> None:
        stage = state.stages.get(stage_name)
        parts.append(f"<h2>{html.escape(title_)}</h2>")
        if stage is not None:
            parts.append(_figures_table(stage.figures))
        for path, caption in images:
            if path.exists():
                parts.append(_img(path, caption))

    section("Instruments", "check", [])
    section("Calibration", "calibrate", [])
    recording_images: list[tuple[Path, str]] = []
    if session_file.exists():
        try:
            map_png, traces_png = plot_recording(session_file, figures_dir)
            recording_images = [
                (map_png, "RMS of every electrode (blank: bad channel)"),
                (traces_png, "Example traces"),
            ]
        except (OSError, KeyError, ValueError) as exc:
            log.warning("report: recording plots skipped: %s", exc)
    section("Recording", "record", recording_images)
    extract = state.stages.get("extract")
    scores_text = extract.figures.get("scores_text", "") if extract else ""
    section(
        "Connectivity",
        "extract",
        [
            (folder / "connectivity_matrix.png", "Connectivity matrix"),
            (folder / "average_psp.png", "Average PSPs"),
        ],
    )
    if scores_text:
        parts.append(
            "<h3>Scores against the emulator's ground truth</h3><pre>"
            f"{html.escape(scores_text)}</pre>"
        )
    imprint_dir = folder / "imprint"
    section(
        "Imprint",
        "imprint",
        [(p, p.stem.replace("_", " ")) for p in sorted(imprint_dir.glob("*.png"))],
    )
    text = imprint_dir / "imprint_report.txt"
    if text.exists():
        parts.append(f"<pre>{html.escape(text.read_text())}</pre>")
    parts.append("</body></html>")
    out = folder / REPORT_FILE
    out.write_text("\n".join(parts))
    return out
