"""The short report of a calibration: a text summary and a few PNG plots (matplotlib, Agg).

SI units inside; µV, pA, mΩ, µS and ppm only here, at the edge. An optional
:class:`Evaluation` — errors against a known truth before and after applying the record
(the emulated lab knows its hidden values) — is added to the text and plotted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np

from calibration.cnea import BAD_REASONS
from calibration.records import CalibrationRecord, format_utc

matplotlib.use("Agg")
import matplotlib.pyplot as plt

GAIN_LABELS = ("1", "2", "4")


@dataclass
class Evaluation:
    """Errors against a truth, before and after applying the record (same units, SI)."""

    what: str
    """What is compared, e.g. "recorded volts vs the electrodes' true input"."""
    before: np.ndarray
    after: np.ndarray
    unit: str
    """Display unit of ``scale * value`` (e.g. "µV")."""
    scale: float = 1.0
    lines: list[str] = field(default_factory=list)

    @property
    def rms_before(self) -> float:
        return _rms(self.before)

    @property
    def rms_after(self) -> float:
        return _rms(self.after)

    def summary(self) -> str:
        b, a = self.rms_before * self.scale, self.rms_after * self.scale
        ratio = b / a if a > 0 else math.inf
        mb, ma = _mean(self.before) * self.scale, _mean(self.after) * self.scale
        return (
            f"{self.what}: RMS error {b:.4g} {self.unit} before, {a:.4g} {self.unit} after "
            f"({ratio:.1f}x closer); mean error {mb:+.3g} → {ma:+.3g} {self.unit}"
        )


def _rms(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(np.sqrt(np.mean(x**2))) if x.size else math.nan


def _mean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(np.mean(x)) if x.size else math.nan


def _pm(value: float, u: float, scale: float = 1.0, digits: int = 4) -> str:
    if not math.isfinite(u):
        return f"{value * scale:.{digits}g}"
    return f"{value * scale:.{digits}g} ± {u * scale:.2g}"


def summary_lines(record: CalibrationRecord) -> list[str]:
    """The record in a few lines (what the command prints)."""
    v, u = record.values, record.uncertainties
    lines = [
        f"record {record.record_id}",
        *(f"  {role}: {ident}" for role, ident in record.identities.items()),
        f"  taken {record.created_utc} by {record.operator or '(no operator given)'}, valid "
        f"{record.valid_days:g} days (until {format_utc(record.valid_until)})",
        "  temperature: "
        + (f"{record.temperature_c:.2f} °C" if record.temperature_c is not None else "unknown"),
    ]
    if record.kind == "cnea":
        bad = np.asarray(v["bad_channels"])
        gain, nominal = np.asarray(v["gain"]), np.asarray(v["nominal_gain"])
        for mode, name, unit, scale in (
            (0, "current clamp", "µV", 1e6),
            (1, "voltage clamp", "pA", 1e12),
        ):
            for gi, g in enumerate(GAIN_LABELS):
                factor = gain[mode, gi] / nominal[mode, gi]
                if not np.isfinite(factor).any():
                    continue
                ok = np.isfinite(factor) & ~bad
                rel_u = np.asarray(u["gain"])[mode, gi] / gain[mode, gi]
                off_u = np.asarray(u["offset"])[mode, gi]
                lines.append(
                    f"  {name}, gain {g}: true/nominal gain {np.median(factor[ok]):.4f} median "
                    f"(spread {np.std(factor[ok]) * 100:.2f} %), uncertainty "
                    f"{np.median(rel_u[ok]) * 1e6:.1f} ppm; offsets spread "
                    f"{np.std(np.asarray(v['offset'])[mode, gi][ok]) * scale:.1f} {unit}, "
                    f"uncertainty {np.median(off_u[ok]) * scale:.3g} {unit}"
                )
        reasons = np.asarray(v["bad_reason"])
        lines.append(
            f"  bad channels: {int(bad.sum())} of {bad.size}"
            + "".join(
                f"; {name}: {int(((reasons & bit) != 0).sum())}"
                for bit, name in BAD_REASONS.items()
                if ((reasons & bit) != 0).any()
            )
        )
    elif record.kind == "smu":
        lines += [
            f"  current offset: {_pm(v['current_offset_a'], u['current_offset_a'], 1e12)} pA",
            f"  voltage offset: {_pm(v['voltage_offset_v'], u['voltage_offset_v'], 1e6)} µV",
            f"  conductance gain (g_I g_V): {
                _pm(v['conductance_gain'], u['conductance_gain'], 1, 8)
            }",
        ]
        cert = record.info.get("certificate", {})
        for k, (r, ur, nom) in enumerate(
            zip(v["reference_ohm"], u["reference_ohm"], v["reference_nominal_ohm"], strict=True)
        ):
            tag = " (certified standard)" if cert.get("number") == k + 1 else ""
            lines.append(
                f"  reference {k + 1}: {_pm(r, ur, 1, 9)} ohm, {(r / nom - 1) * 100:+.3f} % "
                f"of nominal{tag}"
            )
    elif record.kind == "crossbar":
        lines.append(f"  read offset: {_pm(v['read_offset_a'], u['read_offset_a'], 1e12)} pA")
        for kind in ("row", "col"):
            seg = v[f"segment_{kind}_ohm"]
            contact = np.asarray(v[f"contact_{kind}_ohm"])
            line = np.asarray(v[f"line_{kind}_ohm"])
            lines.append(
                f"  {kind} lines: {np.mean(line):.3f} ohm mean end to end; segment "
                f"{_pm(seg, u[f'segment_{kind}_ohm'], 1e3, 4)} mohm; contacts "
                + (
                    f"{np.nanmean(contact):.2f} ohm mean "
                    f"(±{np.nanmedian(u[f'contact_{kind}_ohm']):.2g})"
                    if np.isfinite(contact).any()
                    else "not separated (no far-end reads on this array)"
                )
            )
        wire = np.asarray(v["wire_ohm"])
        if np.isfinite(wire).any():
            lines.append(f"  wire in series with a cell: {wire.min():.1f} to {wire.max():.1f} ohm")
        if "cell_status" in v:
            status = np.asarray(v["cell_status"])
            free = status == 0
            lines.append(
                f"  cells: {int((status > 0).sum())} stuck high, {int((status < 0).sum())} stuck "
                f"low of {status.size}; window median {np.median(v['g_bottom_s'][free]) * 1e6:.2f}"
                f" to {np.median(v['g_top_s'][free]) * 1e6:.2f} µS"
            )
    return lines


def write_report(
    record: CalibrationRecord, out_dir: Path | str, evaluations: list[Evaluation] | None = None
) -> list[Path]:
    """``report.txt`` and the PNG plots of ``record`` in ``out_dir``; the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    evaluations = evaluations or []
    text = summary_lines(record)
    for ev in evaluations:
        text += ["", ev.summary(), *(f"  {line}" for line in ev.lines)]
    report = out / "report.txt"
    report.write_text("\n".join(text) + "\n")
    plots = {"cnea": _plot_cnea, "smu": _plot_smu, "crossbar": _plot_crossbar}[record.kind]
    written = [report, *plots(record, out)]
    if evaluations:
        written.append(_plot_evaluations(evaluations, out / f"{record.kind}_before_after.png"))
    return written


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _grid(values: np.ndarray) -> np.ndarray:
    n = values.size
    side = round(math.sqrt(n))
    return values.reshape(side, side) if side * side == n else values.reshape(1, n)


def _plot_cnea(record: CalibrationRecord, out: Path) -> list[Path]:
    v = record.values
    gain, nominal, offset = (np.asarray(v[k]) for k in ("gain", "nominal_gain", "offset"))
    bad = np.asarray(v["bad_channels"])
    combos = [(m, g) for m in (0, 1) for g in range(3) if np.isfinite(gain[m, g]).any()]
    mode, gi = combos[0]
    factor = np.where(bad, np.nan, gain[mode, gi] / nominal[mode, gi])
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    im = axes[0].imshow(_grid((factor - 1) * 100), cmap="coolwarm", vmin=-5, vmax=5)
    axes[0].set_title(f"gain error, %  (mode {mode}, gain {GAIN_LABELS[gi]})")
    fig.colorbar(im, ax=axes[0])
    scale, unit = (1e6, "µV") if mode == 0 else (1e12, "pA")
    im = axes[1].imshow(_grid(np.where(bad, np.nan, offset[mode, gi]) * scale), cmap="coolwarm")
    axes[1].set_title(f"offset, {unit}")
    fig.colorbar(im, ax=axes[1])
    axes[2].imshow(_grid(bad.astype(float)), cmap="Greys", vmin=0, vmax=1)
    axes[2].set_title(f"bad channels ({int(bad.sum())})")
    paths = [_save(fig, out / "cnea_maps.png")]
    fig, ax = plt.subplots(figsize=(7, 4))
    for m, g in combos:
        f = gain[m, g] / nominal[m, g]
        f = f[np.isfinite(f) & ~bad]
        ax.hist((f - 1) * 100, bins=60, histtype="step", label=f"mode {m}, gain {GAIN_LABELS[g]}")
    ax.set_xlabel("true / nominal gain - 1, %")
    ax.set_ylabel("channels")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / "cnea_gain_histogram.png"))
    return paths


def _plot_smu(record: CalibrationRecord, out: Path) -> list[Path]:
    v, u = record.values, record.uncertainties
    r, ur, nom = (
        np.asarray(x) for x in (v["reference_ohm"], u["reference_ohm"], v["reference_nominal_ohm"])
    )
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(1, r.size + 1)
    ax.errorbar(x, (r / nom - 1) * 100, yerr=ur / nom * 100 * 3, fmt="o", capsize=4)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xticks(x, [f"{n:g} Ω" for n in nom])
    ax.set_ylabel("calibrated / nominal - 1, %  (bars: 3 u)")
    ax.set_title("reference resistors")
    return [_save(fig, out / "smu_references.png")]


def _plot_crossbar(record: CalibrationRecord, out: Path) -> list[Path]:
    v = record.values
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for kind in ("row", "col"):
        axes[0].plot(np.asarray(v[f"line_{kind}_ohm"]), ".-", label=f"{kind} lines, end to end")
        contact = np.asarray(v[f"contact_{kind}_ohm"])
        if np.isfinite(contact).any():
            axes[0].plot(contact, "x", label=f"{kind} contacts")
    axes[0].set_xlabel("line")
    axes[0].set_ylabel("Ω")
    axes[0].legend(fontsize=8)
    wire = np.asarray(v["wire_ohm"])
    if np.isfinite(wire).any():
        im = axes[1].imshow(wire, cmap="viridis")
        fig.colorbar(im, ax=axes[1], label="Ω")
        axes[1].set_title("wire resistance in series with each cell")
    else:
        axes[1].set_axis_off()
    paths.append(_save(fig, out / "crossbar_wires.png"))
    if "cell_status" in v:
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        for ax, key, title in (
            (axes[0], "g_bottom_s", "bottom of window, µS"),
            (axes[1], "g_top_s", "top of window, µS"),
        ):
            im = ax.imshow(np.asarray(v[key]) * 1e6, cmap="magma", norm="log")
            ax.set_title(title)
            fig.colorbar(im, ax=ax)
        axes[2].imshow(np.asarray(v["cell_status"]), cmap="coolwarm", vmin=-1, vmax=1)
        axes[2].set_title("stuck cells (red high, blue low)")
        paths.append(_save(fig, out / "crossbar_cells.png"))
    return paths


def _plot_evaluations(evaluations: list[Evaluation], path: Path) -> Path:
    fig, axes = plt.subplots(1, len(evaluations), figsize=(6 * len(evaluations), 4), squeeze=False)
    for ax, ev in zip(axes[0], evaluations, strict=True):
        before = np.asarray(ev.before, dtype=float).ravel() * ev.scale
        after = np.asarray(ev.after, dtype=float).ravel() * ev.scale
        both = np.concatenate([before, after])
        both = both[np.isfinite(both)]
        lim = float(np.percentile(np.abs(both), 99.5)) if both.size else 1.0
        bins = np.linspace(-lim, lim, 80)
        ax.hist(
            before, bins=bins, histtype="step", label=f"before (RMS {ev.rms_before * ev.scale:.3g})"
        )
        ax.hist(
            after, bins=bins, histtype="step", label=f"after (RMS {ev.rms_after * ev.scale:.3g})"
        )
        ax.set_yscale("log")
        ax.set_xlabel(f"error, {ev.unit}")
        ax.set_title(ev.what, fontsize=9)
        ax.legend(fontsize=8)
    return _save(fig, path)
