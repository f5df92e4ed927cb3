"""Figures of an extraction (matplotlib, Agg, PNG): average PSPs and the connectivity matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from instrument.extract.pipeline import ExtractionResult
from instrument.extract.psp import KIND_ELECTRICAL, KIND_EXCITATORY, KIND_INHIBITORY


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def example_connections(result: ExtractionResult) -> list[int]:
    """One strong-as-possible connection of each class present (by z)."""
    c = result.connectivity
    out = []
    for kind in (KIND_EXCITATORY, KIND_INHIBITORY, KIND_ELECTRICAL):
        idx = np.flatnonzero((c.kind == kind) & ~c.strong)
        if idx.size == 0:
            idx = np.flatnonzero(c.kind == kind)
        if idx.size:
            out.append(int(idx[np.argmax(c.z[idx])]))
    return out


def plot_average_psp(result: ExtractionResult, path: Path | str) -> Path:
    """Average PSP of an example connection of each class, with ±2 noise-of-average band."""
    plt = _pyplot()
    c = result.connectivity
    u = result.units
    picks = example_connections(result)
    fig, axes = plt.subplots(1, max(1, len(picks)), figsize=(4.2 * max(1, len(picks)), 3.4))
    axes = np.atleast_1d(axes)
    lags_ms = result.lags_s * 1e3
    names = ("excitatory", "inhibitory", "electrical")
    for ax, k in zip(axes, picks, strict=False):
        gain = c.psp_electrode_v[k] / c.weight_v[k] if c.weight_v[k] else 1.0
        trace_mv = c.average_v[k] / gain * 1e3
        noise_mv = c.noise_v[k] * 1e3
        ax.fill_between(lags_ms, -2 * noise_mv, 2 * noise_mv, color="0.85", label="±2 noise")
        ax.plot(lags_ms, trace_mv, color="C3" if c.kind[k] == 0 else "C0", lw=1.5)
        ax.axvline(0, color="k", lw=0.6, ls=":")
        ax.axvline(c.latency_s[k] * 1e3, color="C2", lw=0.8, ls="--", label="onset")
        ax.set_title(
            f"{names[int(c.kind[k])]}{' (strong)' if c.strong[k] else ''}: "
            f"{int(u.best[c.pre[k]])} → {int(u.best[c.post[k]])}\n"
            f"{c.weight_v[k] * 1e3:+.2f} mV, z {c.z[k]:.1f}, {int(c.n_triggers[k])} spikes",
            fontsize=9,
        )
        ax.set_xlabel("time from presynaptic spike (ms)")
        ax.set_ylabel("somatic PSP (mV)")
        ax.legend(fontsize=7, loc="upper left")
    if not picks:
        axes[0].text(0.5, 0.5, "no connections", ha="center", va="center")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_connectivity_matrix(result: ExtractionResult, path: Path | str) -> Path:
    """Units × units matrix of signed weights (units ordered by best electrode)."""
    plt = _pyplot()
    c = result.connectivity
    n = result.units.n_units
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    lim = float(np.nanpercentile(np.abs(c.weight_v), 98) * 1e3) if c.n else 1.0
    chem = c.kind != KIND_ELECTRICAL
    sc = ax.scatter(
        c.post[chem], c.pre[chem], c=c.weight_v[chem] * 1e3, s=2, cmap="coolwarm",
        vmin=-lim, vmax=lim, marker="s", linewidths=0,
    )  # fmt: skip
    ax.scatter(c.post[~chem], c.pre[~chem], s=6, c="k", marker="x", label="electrical")
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel("postsynaptic unit (ordered by best electrode)")
    ax.set_ylabel("presynaptic unit")
    ax.set_title(f"{c.n} connections among {n} units", fontsize=10)
    fig.colorbar(sc, ax=ax, label="weight (mV, somatic)")
    if (~chem).any():
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
