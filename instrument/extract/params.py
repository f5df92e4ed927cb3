"""Every parameter of connectivity extraction, with its unit, default and meaning.

Read from the ``[extraction]`` table of the lab configuration with :func:`load_params`
(validated by :func:`instrument.config.parse_section`, then range-checked here so a
bad value is a :class:`~instrument.config.ConfigError` naming the key and line).
The method each parameter belongs to is explained in ``docs/extraction.md``.
SI units throughout (s, V, Hz, m, bytes).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from instrument.config import ConfigError, LabConfig, _Locator, parse_section

SECTION = "extraction"


@dataclass(frozen=True)
class ExtractionParams:
    """Parameters of the extraction pipeline (defaults = ``[extraction]`` of default_lab.toml)."""

    # --- reading, bad channels, memory -------------------------------------------------
    chunk_s: float = 1.0
    """Raw samples are read, calibrated, spike-detected and decimated in chunks this long, s.
    Part of the method (spike thresholds are estimated per chunk), not only of memory."""
    memory_budget_bytes: int = 2_000_000_000
    """Working memory the extraction may hold, bytes. Decimated traces spill to a scratch
    file beyond it; accumulators are processed in post-unit groups that fit it."""
    scratch_dir: str = ""
    """Folder for the scratch file of decimated traces ("" = the system temporary folder)."""
    saturation_fraction: float = 0.01
    """A channel with more than this fraction of its samples at the ADC rail is bad."""
    min_noise_v: float = 0.2e-6
    """A channel whose robust noise is below this (flat, stuck) is bad, V."""

    # --- spike detection -----------------------------------------------------------------
    spike_rise_s: float = 0.5e-3
    """Spikes are detected on the rise of the trace over this interval, s."""
    spike_threshold: float = 10.0
    """Detection threshold on the rise, in robust SDs (1.4826 × MAD) of the rise in the chunk."""
    refractory_s: float = 2e-3
    """Minimum interval between two spikes on one channel, s."""
    spike_peak_search_s: float = 1e-3
    """The spike time is the peak within this long after the threshold crossing, s."""

    # --- units ---------------------------------------------------------------------------
    merge_distance_m: float = 60e-6
    """Only electrodes closer than this can see one neuron, m."""
    merge_window_s: float = 0.5e-3
    """Two spikes closer than this are coincident, s."""
    merge_min_coincidence: float = 0.5
    """Electrodes merge when the coincident fraction of the sparser train's spikes exceeds
    its chance value (coincidences at lags of a few ms) by at least this…"""
    merge_min_waveform_corr: float = 0.9
    """…and their average spike waveforms correlate at least this well (waived when one
    of them sees only the extracellular spike)."""
    min_intracellular_spike_v: float = 1e-3
    """A unit whose best electrode's median spike height is below this has no usable
    intracellular trace: it can be presynaptic but is never postsynaptic, V."""
    spike_height_v: float = 0.07
    """Action potential height as the detector measures it (peak minus the level just
    before the rise) at full coupling, V: an electrode's gain is its spike height divided
    by this, and converts its PSPs to somatic volts."""

    # --- subthreshold traces -------------------------------------------------------------
    decimated_rate_hz: float = 1000.0
    """Subthreshold traces are box-averaged down to this rate (a divisor of the sample rate), Hz."""
    blank_before_s: float = 1e-3
    """A channel's own spikes are cut from its trace from this long before the peak…, s."""
    blank_after_s: float = 4e-3
    """…to this long after it, and bridged by a straight line, s."""

    # --- triggers ------------------------------------------------------------------------
    burst_policy: Literal["exclude", "keep"] = "exclude"
    """Network bursts: "exclude" drops presynaptic spikes (and surrogate triggers) inside
    them; "keep" uses every spike."""
    burst_bin_s: float = 10e-3
    """Bin of the population spike count used to find bursts, s."""
    burst_threshold: float = 6.0
    """A bin with more than this many times the median population count is in a burst."""
    burst_min_units: int = 20
    """…and at least this many spikes (small recordings have no meaningful bursts)."""
    burst_pad_s: float = 50e-3
    """Bursts are widened by this much on each side, s."""

    # --- response model --------------------------------------------------------------------
    baseline_start_s: float = -10e-3
    """Baseline window start, relative to the presynaptic spike, s."""
    baseline_end_s: float = -1e-3
    """Baseline window end (and start of the zero-lag bin), s."""
    response_edges_s: Any = field(default=(2e-3, 5e-3, 9e-3, 14e-3, 20e-3))
    """Edges of the response bins after the presynaptic spike, s: the response window (first
    … last edge) of the average's peak, of post spikes and of the trace noise; with
    ``whiten_order = 0`` also the tested bins (the first edge ends the zero-lag bin that
    catches electrical coupling). A list of increasing times."""
    whiten_order: int = 4
    """Responses are tested on each post trace's one-step prediction error under its own
    autoregressive model of this order (0: on the trace itself, in the response bins)."""
    whiten_edges_s: Any = field(default=(1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3, 7e-3))
    """Edges of the bins tested on the prediction error after the presynaptic spike, s (the
    first edge ends the zero-lag bin). A list of increasing times."""
    exclude_before_s: float = 30e-3
    """A trigger is left out for a postsynaptic unit that fired from this long before it…, s."""
    exclude_after_s: float = 20e-3
    """…to this long after it (its own spike and after-hyperpolarisation would swamp the PSP),
    s; for the whitened test at most its last edge (later spikes cannot touch what it reads)."""

    # --- significance --------------------------------------------------------------------
    screen_z: float = 3.2
    """First pass (all pairs): pairs with a tested window beyond this many robust SDs of the
    post unit's null become candidates."""
    max_candidates_per_post: int = 400
    """At most this many candidate presynaptic units per postsynaptic unit (the strongest)."""
    n_surrogates: int = 20
    """Jittered surrogate spike trains per candidate pair."""
    jitter_s: float = 50e-3
    """Surrogate spikes move by a uniform jitter within ±this, s…"""
    jitter_min_s: float = 20e-3
    """…and by at least this much (so the PSP itself stays out of the surrogates), s."""
    seed: int = 1
    """Seed of the surrogate jitters (results are identical run to run, process to process)."""
    fdr: float = 0.01
    """False-discovery rate of the Benjamini–Hochberg procedure over all tested pairs."""
    min_triggers: int = 30
    """Pairs with fewer valid triggers than this are not tested."""

    # --- classification and output ---------------------------------------------------------
    electrical_max_latency_s: float = 1e-3
    """A response starting with the spike (onset after the baseline and within this of the
    spike), in both directions, is electrical, s."""
    eventful_min_probability: float = 0.3
    """Excitatory connections whose presynaptic spike raises the postsynaptic firing
    probability in the response window by at least this much are strong ("eventful")."""
    average_before_s: float = 20e-3
    """Stored average PSP traces start this long before the presynaptic spike, s…"""
    average_after_s: float = 40e-3
    """…and end this long after it, s."""
    onset_fraction: float = 0.2
    """The PSP onset latency is where the average's rise to its peak crosses this fraction
    of the peak."""
    min_latency_s: float = 0.75e-3
    """Chemical connections must start at least this long after the presynaptic spike
    (earlier onsets are common input that also drove the presynaptic spike), s…"""
    max_latency_s: float = 4.5e-3
    """…and at most this long (later onsets are disynaptic: synaptic delays are 1–5 ms and
    the onset, measured at the decimated rate, reads about 0.3 ms late), s."""
    indirect_ratio: float = 2.0
    """A connection a → b no larger than this many times the PSP that a's eventful targets
    x relay to b (Σ firing-probability gain of a → x × |weight of x → b|) is dropped as
    disynaptic (0 keeps them all)."""
    dale: bool = True
    """Dale's law: a unit's outgoing chemical connections share one sign. With two or more,
    the minority sign (votes weighted by z, capped at 10) is dropped as indirect."""

    def to_json(self) -> str:
        """All parameters as JSON text (stored with the results)."""
        d = dataclasses.asdict(self)
        d["response_edges_s"] = list(self.response_edges_s)
        d["whiten_edges_s"] = list(self.whiten_edges_s)
        return json.dumps(d, sort_keys=True)

    # derived quantities (samples at the decimated rate) ---------------------------------
    def decimation(self, sample_rate_hz: float) -> int:
        """Raw samples per decimated sample for a recording at ``sample_rate_hz``."""
        q = sample_rate_hz / self.decimated_rate_hz
        if abs(q - round(q)) > 1e-6 or round(q) < 1:
            raise ConfigError(
                f"{self.decimated_rate_hz} Hz does not divide the sample rate {sample_rate_hz} Hz",
                key=f"{SECTION}.decimated_rate_hz",
            )
        return round(q)

    def dec(self, seconds: float) -> int:
        """``seconds`` in decimated samples (rounded)."""
        return round(seconds * self.decimated_rate_hz)

    def test_edges_s(self) -> tuple[float, ...]:
        """Edges of the tested bins: ``whiten_edges_s`` when whitening, else
        ``response_edges_s``."""
        return tuple(self.whiten_edges_s if self.whiten_order > 0 else self.response_edges_s)

    def boundaries(self) -> list[int]:
        """Bin boundaries of the test in decimated samples: baseline start, baseline end,
        the tested bins' edges (:meth:`test_edges_s`)."""
        return [
            self.dec(self.baseline_start_s),
            self.dec(self.baseline_end_s),
            *[self.dec(e) for e in self.test_edges_s()],
        ]

    def windows(self) -> list[tuple[int, int]]:
        """Tested windows as (first, last) indices into :meth:`boundaries`: the zero-lag
        bin, each bin, and (without whitening) one wide window over all response bins but
        the last (where PSPs peak); the baseline is (0, 1)."""
        m = len(self.test_edges_s()) + 2
        out = [(k, k + 1) for k in range(1, m - 1)]
        if m - 2 > 2 and self.whiten_order == 0:
            out.append((2, m - 2))
        return out


_POSITIVE = (
    "chunk_s",
    "spike_rise_s",
    "spike_threshold",
    "refractory_s",
    "spike_peak_search_s",
    "merge_distance_m",
    "merge_window_s",
    "spike_height_v",
    "decimated_rate_hz",
    "burst_bin_s",
    "burst_threshold",
    "jitter_s",
    "fdr",
    "screen_z",
    "electrical_max_latency_s",
    "average_after_s",
    "max_latency_s",
)
_NON_NEGATIVE = (
    "saturation_fraction",
    "min_noise_v",
    "min_intracellular_spike_v",
    "blank_before_s",
    "blank_after_s",
    "burst_pad_s",
    "exclude_before_s",
    "exclude_after_s",
    "jitter_min_s",
    "average_before_s",
    "burst_min_units",
    "min_latency_s",
    "indirect_ratio",
    "whiten_order",
)
_FRACTIONS = (
    "merge_min_coincidence",
    "merge_min_waveform_corr",
    "eventful_min_probability",
    "onset_fraction",
)


def check(params: ExtractionParams, source: str | None = None, text: str = "") -> ExtractionParams:
    """Range-check ``params``; raise :class:`ConfigError` naming the first bad key."""
    locate = _Locator(text)

    def fail(key: str, message: str) -> ConfigError:
        full = f"{SECTION}.{key}"
        return ConfigError(message, key=full, path=source, line=locate(full))

    for key in _POSITIVE:
        value = getattr(params, key)
        if not (math.isfinite(value) and value > 0):
            raise fail(key, f"must be > 0, got {value!r}")
    for key in _NON_NEGATIVE:
        value = getattr(params, key)
        if not (math.isfinite(value) and value >= 0):
            raise fail(key, f"must be >= 0, got {value!r}")
    for key in _FRACTIONS:
        value = getattr(params, key)
        if not 0.0 <= value <= 1.0:
            raise fail(key, f"must be in [0, 1], got {value!r}")
    if params.memory_budget_bytes < 64 << 20:
        raise fail("memory_budget_bytes", "must be at least 64 MiB")
    if params.n_surrogates < 2:
        raise fail("n_surrogates", "must be >= 2")
    if params.min_triggers < 2:
        raise fail("min_triggers", "must be >= 2")
    if params.max_candidates_per_post < 1:
        raise fail("max_candidates_per_post", "must be >= 1")
    if params.fdr >= 1.0:
        raise fail("fdr", "must be < 1")
    if params.min_latency_s >= params.max_latency_s:
        raise fail("min_latency_s", "must be < max_latency_s")
    if params.jitter_min_s >= params.jitter_s:
        raise fail("jitter_min_s", "must be < jitter_s")
    if not params.baseline_start_s < params.baseline_end_s <= 0.0:
        raise fail("baseline_start_s", "need baseline_start_s < baseline_end_s <= 0")
    for key in ("response_edges_s", "whiten_edges_s"):
        edges = getattr(params, key)
        if (
            not isinstance(edges, list | tuple)
            or len(edges) < 2
            or not all(isinstance(e, int | float) and not isinstance(e, bool) for e in edges)
        ):
            raise fail(key, "must be a list of at least two times, s")
        if not all(a < b for a, b in itertools.pairwise(edges)) or edges[0] <= 0:
            raise fail(key, "must be positive and strictly increasing")
        b = [params.dec(params.baseline_start_s), params.dec(params.baseline_end_s)]
        b += [params.dec(e) for e in edges]
        if any(x >= y for x, y in itertools.pairwise(b)):
            raise fail(
                key,
                f"bins must be at least one decimated sample "
                f"({1e3 / params.decimated_rate_hz:g} ms) wide",
            )
    if params.blank_before_s + params.blank_after_s >= params.chunk_s / 4:
        raise fail("blank_after_s", "spike blanking must be much shorter than chunk_s")
    if params.average_before_s > params.chunk_s or params.jitter_s > 10 * params.chunk_s:
        raise fail("average_before_s", "windows must be shorter than chunk_s")
    return dataclasses.replace(
        params,
        response_edges_s=tuple(float(e) for e in params.response_edges_s),
        whiten_edges_s=tuple(float(e) for e in params.whiten_edges_s),
    )


def load_params(config: LabConfig | None = None, **overrides: Any) -> ExtractionParams:
    """The ``[extraction]`` table of ``config`` (the defaults when None), with ``overrides``."""
    if config is None:
        from instrument.config import load

        config = load()
    params = parse_section(ExtractionParams, config, SECTION)
    if overrides:
        params = dataclasses.replace(params, **overrides)
    return check(params, config.source or None, config.text)


def params_from_json(text: str) -> ExtractionParams:
    """The parameters stored with a result (see :meth:`ExtractionParams.to_json`)."""
    d = json.loads(text)
    d["response_edges_s"] = tuple(d["response_edges_s"])
    if "whiten_edges_s" in d:
        d["whiten_edges_s"] = tuple(d["whiten_edges_s"])
    return check(ExtractionParams(**d))
