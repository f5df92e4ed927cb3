"""Scoring an extracted map against the ground truth of an emulated recording.

Each unit is mapped to a true neuron by the majority of its electrodes'
``electrode_neuron``. A detected connection between units of true neurons (a, b) is a
true positive when the truth has a synapse a → b; one between two units of the same
neuron, or involving a unit that maps to no neuron, is a false positive. Connections
are compared as neuron pairs (duplicates counted once).

Recall is over the *observable* true synapses: the presynaptic neuron has a unit with
enough triggers and the postsynaptic one a unit with an intracellular trace (the rest
of the truth cannot be measured from this recording; the coverage is reported).
Scores are reported overall, by true |PSP| (precision bins use the true size for true
positives and the extracted size for false positives), and by the PSP relative to the
noise of its average (single-trial SD of the post unit's response / √triggers / gain).
For PSPs ≥ 3× that noise a *recall ceiling* is reported too: the recall of an ideal
detector whose z were the PSP/noise itself, at the detection threshold this run realised
(the largest reported p, before the Šidák correction over the windows) — what the false-
discovery control over all tested pairs allows at best.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from scipy.stats import norm

from instrument.extract.pipeline import ExtractionResult
from instrument.extract.psp import KIND_ELECTRICAL, KIND_NAMES
from instrument.recording import GroundTruth

PSP_BINS_V = (0.2e-3, 0.5e-3, 1e-3, 2e-3)
"""Edges of the |PSP| bins: <0.2, 0.2–0.5, 0.5–1, 1–2, >2 mV."""
SNR_BINS = (1.0, 2.0, 3.0, 5.0)
"""Edges of the PSP / noise-of-average bins."""
STRONG_TRUTH_V = 5e-3
"""True excitatory PSPs at least this large count as strong for the strong-class score, V."""


def unit_neurons(result: ExtractionResult, truth: GroundTruth) -> np.ndarray:
    """(U,) the true neuron of each unit (majority of its electrodes), −1 for none."""
    units = result.units
    en = np.asarray(truth.electrode_neuron)
    out = np.full(units.n_units, -1, dtype=np.int64)
    for u in range(units.n_units):
        nn = en[units.electrodes(u)]
        nn = nn[nn >= 0]
        if nn.size:
            vals, counts = np.unique(nn, return_counts=True)
            out[u] = int(vals[np.argmax(counts)])
    return out


def _prf(tp: int, n_det: int, n_true: int) -> dict[str, float]:
    precision = tp / n_det if n_det else float("nan")
    recall = tp / n_true if n_true else float("nan")
    f1 = (
        2 * precision * recall / (precision + recall)
        if n_det and n_true and (precision + recall) > 0
        else float("nan")
    )
    return {"precision": precision, "recall": recall, "f1": f1}


def _bin_labels(edges: tuple[float, ...], scale: float, unit: str) -> list[str]:
    e = [x * scale for x in edges]
    labels = [f"<{e[0]:g}{unit}"]
    labels += [f"{a:g}-{b:g}{unit}" for a, b in itertools.pairwise(e)]
    labels.append(f">={e[-1]:g}{unit}")
    return labels


def detection_threshold_z(p: np.ndarray, n_windows: int) -> float:
    """The |z| a single window must reach to be detected in this run: the largest reported
    p-value (the BH threshold as realised) before the Šidák correction over the windows."""
    if p.size == 0:
        return float("nan")
    p_window = -np.expm1(np.log1p(-min(float(np.max(p)), 1.0 - 1e-16)) / n_windows)
    return float(norm.isf(p_window / 2.0))


def score(result: ExtractionResult, truth: GroundTruth) -> dict[str, Any]:
    """Precision, recall, F1 (overall, by |PSP| and by PSP/noise), sign and class accuracy,
    weight correlation, latency error, error rate. Plain numbers (JSON-able)."""
    params = result.params
    conn = result.connectivity
    neuron = unit_neurons(result, truth)
    spre = np.asarray(truth.synapse_pre, dtype=np.int64)
    spost = np.asarray(truth.synapse_post, dtype=np.int64)
    sw = np.asarray(truth.synapse_weight_v, dtype=np.float64)
    sd = np.asarray(truth.synapse_delay_s, dtype=np.float64)
    sk = np.asarray(truth.synapse_kind, dtype=np.int64)
    index = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(spre, spost, strict=True))}

    # the best unit of each neuron as pre (most triggers) and as post (intracellular)
    pre_ok = result.unit_triggers >= params.min_triggers
    post_ok = result.units.intracellular & np.isfinite(result.unit_trial_sd_v)
    best_pre: dict[int, int] = {}
    best_post: dict[int, int] = {}
    for u, n in enumerate(neuron):
        if n < 0:
            continue
        if pre_ok[u] and (
            n not in best_pre or result.unit_triggers[u] > result.unit_triggers[best_pre[n]]
        ):
            best_pre[n] = u
        if post_ok[u] and (
            n not in best_post or result.unit_gain[u] > result.unit_gain[best_post[n]]
        ):
            best_post[n] = u

    def noise_of(pre_u: int, post_u: int) -> float:
        n = max(int(result.unit_triggers[pre_u]), 1)
        return float(result.unit_trial_sd_v[post_u] / np.sqrt(n) / result.unit_gain[post_u])

    observable = np.array(
        [(int(a) in best_pre and int(b) in best_post) for a, b in zip(spre, spost, strict=True)],
        dtype=bool,
    )
    true_snr = np.full(sw.size, np.nan)
    for i in np.flatnonzero(observable):
        true_snr[i] = abs(sw[i]) / noise_of(best_pre[int(spre[i])], best_post[int(spost[i])])

    # detections as neuron pairs
    det: dict[tuple[int, int], int] = {}
    same_neuron = unmapped = 0
    for k in range(conn.n):
        a, b = int(neuron[conn.pre[k]]), int(neuron[conn.post[k]])
        if a < 0 or b < 0:
            unmapped += 1
            det[(-1 - k, -1)] = k
        elif a == b:
            same_neuron += 1
            det[(a, -2 - k)] = k
        elif (a, b) not in det:
            det[(a, b)] = k
    det_keys = list(det)
    det_idx = np.array([det[key] for key in det_keys], dtype=np.int64)
    truth_of = np.array([index.get(key, -1) for key in det_keys], dtype=np.int64)
    tp_mask = truth_of >= 0
    tp = int(tp_mask.sum())
    n_det = len(det_keys)
    n_obs = int(observable.sum())
    overall = _prf(tp, n_det, n_obs)

    # sizes of detections for the precision bins (truth for TPs, extracted for FPs)
    det_size = np.abs(conn.weight_v[det_idx]) if n_det else np.zeros(0)
    det_size = np.where(tp_mask, np.abs(sw[np.maximum(truth_of, 0)]), det_size)
    det_snr = np.full(n_det, np.nan)
    for i, k in enumerate(det_idx):
        u, v = int(conn.pre[k]), int(conn.post[k])
        noise = noise_of(u, v)
        det_snr[i] = det_size[i] / noise if noise > 0 else np.nan
        if tp_mask[i]:
            det_snr[i] = true_snr[truth_of[i]] if np.isfinite(true_snr[truth_of[i]]) else det_snr[i]
    detected_truth = np.zeros(sw.size, dtype=bool)
    detected_truth[truth_of[tp_mask]] = True

    def binned(values_true: np.ndarray, values_det: np.ndarray, edges: tuple[float, ...]):
        rows = []
        bins_true = np.digitize(values_true, edges)
        bins_det = np.digitize(values_det, edges)
        for b in range(len(edges) + 1):
            in_true = observable & (bins_true == b)
            in_det = bins_det == b
            row = _prf(int((in_det & tp_mask).sum()), int(in_det.sum()), int(in_true.sum()))
            row.update(
                n_true=int(in_true.sum()),
                n_detected=int(in_det.sum()),
                true_positives=int((in_det & tp_mask).sum()),
                recall_hits=int((in_true & detected_truth).sum()),
            )
            row["recall"] = row["recall_hits"] / row["n_true"] if row["n_true"] else float("nan")
            p_, r_ = row["precision"], row["recall"]
            row["f1"] = (
                2 * p_ * r_ / (p_ + r_) if p_ == p_ and r_ == r_ and p_ + r_ > 0 else float("nan")
            )
            rows.append(row)
        return rows

    by_psp = binned(np.abs(sw), det_size, PSP_BINS_V)
    by_snr = binned(np.nan_to_num(true_snr, nan=-1.0), np.nan_to_num(det_snr, nan=-1.0), SNR_BINS)
    above = observable & (np.nan_to_num(true_snr) >= 3.0)
    det_above = np.nan_to_num(det_snr) >= 3.0
    snr3 = _prf(int((det_above & tp_mask).sum()), int(det_above.sum()), int(above.sum()))
    snr3["recall"] = (
        float((above & detected_truth).sum() / above.sum()) if above.sum() else float("nan")
    )
    p_, r_ = snr3["precision"], snr3["recall"]
    snr3["f1"] = 2 * p_ * r_ / (p_ + r_) if p_ == p_ and r_ == r_ and p_ + r_ > 0 else float("nan")
    snr3.update(n_true=int(above.sum()), n_detected=int(det_above.sum()))
    z_star = detection_threshold_z(conn.p, len(params.windows()))
    snr3["threshold_z"] = z_star
    snr3["recall_ceiling"] = (
        float(np.mean(norm.sf(z_star - true_snr[above]))) if above.any() else float("nan")
    )

    # classes, weights, latencies over true positives
    tp_det = det_idx[tp_mask]
    tp_truth = truth_of[tp_mask]
    kind_det = conn.kind[tp_det].astype(np.int64)
    kind_true = sk[tp_truth]
    chem = (kind_true != KIND_ELECTRICAL) & (kind_det != KIND_ELECTRICAL)
    sign_acc = float(np.mean(kind_det[chem] == kind_true[chem])) if chem.any() else float("nan")
    class_acc = float(np.mean(kind_det == kind_true)) if tp else float("nan")
    w_det = conn.weight_v[tp_det][chem]
    w_true = sw[tp_truth][chem]
    fin = np.isfinite(w_det)
    corr = float(np.corrcoef(w_det[fin], w_true[fin])[0, 1]) if fin.sum() > 2 else float("nan")
    ratio = float(np.median(w_det[fin] / w_true[fin])) if fin.any() else float("nan")
    lat_err = conn.latency_s[tp_det][chem] - sd[tp_truth][chem]
    lat_err = lat_err[np.isfinite(lat_err)]
    wrong_class = int((kind_det != kind_true).sum())
    errors = (n_det - tp) + wrong_class
    strong_true = (sk == 0) & (sw >= STRONG_TRUTH_V) & observable
    strong_det = conn.strong[det_idx] if n_det else np.zeros(0, dtype=bool)
    strong_hits = int((strong_det & tp_mask & np.isin(truth_of, np.flatnonzero(strong_true))).sum())
    confusion = {
        f"{KIND_NAMES[a]}->{KIND_NAMES[b]}": int(((kind_true == a) & (kind_det == b)).sum())
        for a in range(3)
        for b in range(3)
    }
    return {
        "n_units": int(result.units.n_units),
        "n_neurons_with_units": len(set(int(n) for n in neuron if n >= 0)),
        "n_neurons": int(np.asarray(truth.neuron_excitatory).size),
        "n_true_synapses": int(sw.size),
        "n_observable": n_obs,
        "n_detected": n_det,
        "true_positives": tp,
        "false_positives": n_det - tp,
        "false_negatives": n_obs - int(detected_truth[observable].sum()),
        "same_neuron_detections": same_neuron,
        "unmapped_detections": unmapped,
        **overall,
        "snr_at_least_3": snr3,
        "psp_bins": _bin_labels(PSP_BINS_V, 1e3, " mV"),
        "by_psp": by_psp,
        "snr_bins": _bin_labels(SNR_BINS, 1.0, ""),
        "by_snr": by_snr,
        "sign_accuracy": sign_acc,
        "class_accuracy": class_acc,
        "class_confusion": confusion,
        "weight_correlation": corr,
        "weight_ratio_median": ratio,
        "latency_error_median_s": float(np.median(np.abs(lat_err)))
        if lat_err.size
        else float("nan"),
        "latency_bias_s": float(np.mean(lat_err)) if lat_err.size else float("nan"),
        "error_rate": errors / n_det if n_det else float("nan"),
        "strong_true": int(strong_true.sum()),
        "strong_detected": int(strong_det.sum()),
        "strong_hits": strong_hits,
    }


def format_scores(scores: dict[str, Any]) -> str:
    """A human-readable summary (mV at this edge)."""
    s = scores
    lines = [
        f"units {s['n_units']} ({s['n_neurons_with_units']} of {s['n_neurons']} neurons); "
        f"true synapses {s['n_true_synapses']}, observable {s['n_observable']}",
        f"detected {s['n_detected']}: TP {s['true_positives']}, FP {s['false_positives']} "
        f"(same neuron {s['same_neuron_detections']}, unmapped {s['unmapped_detections']}), "
        f"FN {s['false_negatives']}",
        f"precision {s['precision']:.3f}  recall {s['recall']:.3f}  F1 {s['f1']:.3f}  "
        f"error rate {s['error_rate']:.3f}",
        f"PSP >= 3x noise of its average: precision {s['snr_at_least_3']['precision']:.3f}  "
        f"recall {s['snr_at_least_3']['recall']:.3f}  (n {s['snr_at_least_3']['n_true']}; "
        f"a detector whose z were the PSP/noise itself would reach recall "
        f"{s['snr_at_least_3']['recall_ceiling']:.3f} at this run's threshold "
        f"|z| {s['snr_at_least_3']['threshold_z']:.2f})",
        f"sign accuracy {s['sign_accuracy']:.3f}  class accuracy {s['class_accuracy']:.3f}  "
        f"weight r {s['weight_correlation']:.3f} (median ratio {s['weight_ratio_median']:.2f})  "
        f"latency |error| median {s['latency_error_median_s'] * 1e3:.2f} ms "
        f"(bias {s['latency_bias_s'] * 1e3:+.2f} ms)",
        f"strong: true {s['strong_true']}, flagged {s['strong_detected']}, hits {s['strong_hits']}",
        "",
        f"{'|PSP|':<14}{'n true':>8}{'n det':>8}{'precision':>11}{'recall':>9}{'F1':>7}",
    ]
    for label, row in zip(s["psp_bins"], s["by_psp"], strict=True):
        lines.append(
            f"{label:<14}{row['n_true']:>8}{row['n_detected']:>8}{row['precision']:>11.3f}"
            f"{row['recall']:>9.3f}{row['f1']:>7.3f}"
        )
    lines.append(
        f"{'PSP/noise':<14}{'n true':>8}{'n det':>8}{'precision':>11}{'recall':>9}{'F1':>7}"
    )
    for label, row in zip(s["snr_bins"], s["by_snr"], strict=True):
        lines.append(
            f"{label:<14}{row['n_true']:>8}{row['n_detected']:>8}{row['precision']:>11.3f}"
            f"{row['recall']:>9.3f}{row['f1']:>7.3f}"
        )
    return "\n".join(lines)
