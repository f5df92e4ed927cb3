"""SMU calibration against the selector board's reference resistors.

The rig's SMU sources a voltage and measures a current. With true gains and offsets
``V_out = g_V V_set + o_V`` and ``I_read = g_I I + o_I``, a resistor ``R`` reads

    I_read = o_I + (g_I g_V / R) (V_set + o_V / g_V)

so a sweep of ``V_set`` on each reference gives a slope ``s = k / R`` (``k = g_I g_V``,
the *conductance gain*) and an intercept ``b = o_I + s o_V'`` (``o_V' = o_V / g_V``, the
voltage offset referred to the programmed level). With the SMU disconnected
(``:ROUT:OPEN:ALL``) it reads ``o_I`` alone. So the procedure finds:

* ``current_offset_a`` — from the open circuit and every reference's intercept;
* ``voltage_offset_v`` — from how the intercepts grow with the references' slopes;
* ``conductance_gain`` ``k`` — from the board's **certified standard** reference
  (``:ROUT:REF:CERT?``: value and uncertainty from its calibration certificate);
* ``reference_ohm`` — every reference as ``k / s``.

A resistance standard fixes only the ratio of volts to amperes: ``g_V`` and ``g_I``
separately would need a voltage or current standard, and reads (``G = I / V``) need only
their product. Everything is measured at the SMU's configured integration time and
compliance (the rig's), with every level inside the technology's safety limits.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from calibration.progress import Progress
from calibration.records import (
    CalibrationError,
    CalibrationRecord,
    InstrumentIdentity,
    format_utc,
    utc_now,
)
from drivers.limits import SafetyLimits
from drivers.selector import REFERENCES, CrossbarSelector
from drivers.smu import SMU

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmuSettings:
    """How an SMU calibration is taken."""

    levels: int = 8
    """Source levels per reference (half positive, half negative; never 0 V)."""
    repeats: int = 2
    """Readings per level."""
    open_readings: int = 16
    """Readings with the SMU disconnected (current offset)."""
    max_voltage_v: float = 0.5
    """Largest |level|, V (also at most 90 % of the safety limit)."""
    current_fraction: float = 0.5
    """Largest current as a fraction of the compliance (references within ±1 % assumed)."""
    references: tuple[int, ...] = (1, 2, 3, 4)

    def __post_init__(self) -> None:
        if self.levels < 4 or self.levels % 2:
            raise CalibrationError(f"levels must be even and >= 4, got {self.levels}")
        if self.repeats < 1 or self.open_readings < 2:
            raise CalibrationError("repeats must be >= 1 and open_readings >= 2")
        if not 0 < self.current_fraction <= 0.9:
            raise CalibrationError("current_fraction must be in (0, 0.9]")
        if not self.references or any(not 1 <= n <= REFERENCES for n in self.references):
            raise CalibrationError(f"references must be among 1..{REFERENCES}")


@dataclass(frozen=True)
class SmuCorrection:
    """What an SMU record corrects: ``G = (I_read - offset) / (k (V_set + o_V'))``."""

    current_offset_a: float
    voltage_offset_v: float
    conductance_gain: float
    record_id: str = ""
    conductance_gain_u: float = 0.0
    """Standard uncertainty of ``conductance_gain``."""

    @classmethod
    def from_record(cls, record: CalibrationRecord) -> SmuCorrection:
        if record.kind != "smu":
            raise CalibrationError(f"record {record.record_id} is a {record.kind} record, not smu")
        u = float(record.uncertainty("conductance_gain"))
        return cls(
            float(record.value("current_offset_a")),
            float(record.value("voltage_offset_v")),
            float(record.value("conductance_gain")),
            record.record_id,
            u if math.isfinite(u) else 0.0,
        )

    def conductance(
        self, current_a: np.ndarray, voltage_v: float | np.ndarray, offset_a: float | None = None
    ) -> np.ndarray:
        """True conductance of what read ``current_a`` at programmed ``voltage_v``, S."""
        offset = self.current_offset_a if offset_a is None else offset_a
        return (np.asarray(current_a) - offset) / (
            self.conductance_gain * (np.asarray(voltage_v) + self.voltage_offset_v)
        )


def _line_fit(v: np.ndarray, i: np.ndarray) -> tuple[float, float, float, float, float]:
    """Least squares ``i = b + s v``: (s, b, u_s, u_b, rms residual)."""
    n = v.size
    vbar = v.mean()
    dv = v - vbar
    sxx = float(dv @ dv)
    s = float(dv @ (i - i.mean())) / sxx
    b_center = float(i.mean())
    resid = i - b_center - s * dv
    sigma = math.sqrt(float(resid @ resid) / max(n - 2, 1))
    u_s = sigma / math.sqrt(sxx)
    b = b_center - s * vbar
    u_b = math.sqrt(sigma**2 / n + (vbar * u_s) ** 2)
    return s, b, u_s, u_b, sigma


def calibrate_smu(
    smu: SMU,
    selector: CrossbarSelector,
    limits: SafetyLimits,
    settings: SmuSettings | None = None,
    *,
    operator: str = "",
    valid_days: float = 365.0,
    software_version: str = "",
    progress: Progress | None = None,
) -> CalibrationRecord:
    """Calibrate ``smu`` (configured with ``limits``) against ``selector``'s references.

    Leaves the output off and every line grounded (on every exit path).
    """
    settings = settings or SmuSettings()
    smu.require_limits()
    identities = {
        "smu": InstrumentIdentity.from_idn(smu.identify()),  # type: ignore[attr-defined]
        "selector": InstrumentIdentity.from_idn(selector.identify()),
    }
    temperature = selector.temperature_c()
    certificate = selector.reference_certificate()
    nominal = np.asarray(selector.reference_nominals(), dtype=float)
    if certificate.number not in settings.references:
        raise CalibrationError(
            f"reference {certificate.number} is the board's certified standard; it must be "
            f"among the references measured ({settings.references})"
        )
    v_top = min(settings.max_voltage_v, 0.9 * limits.max_voltage_v)
    half = settings.levels // 2
    total = 1 + len(settings.references)
    done = 0
    started = time.monotonic()
    slopes: dict[int, tuple[float, float, float, float, float]] = {}
    levels_used: dict[str, list[float]] = {}
    compliance_hits = 0
    try:
        selector.ground_all()
        open_v = np.where(np.arange(settings.open_readings) % 2, -1.0, 1.0) * limits.read_voltage_v
        open_i = np.array([smu.read_current(float(v)).current_a for v in open_v])
        offset_open = float(open_i.mean())
        u_offset_open = float(open_i.std(ddof=1) / math.sqrt(open_i.size))
        done += 1
        if progress:
            progress(done, total, "open circuit")
        for number in settings.references:
            r_nom = float(nominal[number - 1])
            top = min(v_top, settings.current_fraction * limits.compliance_a * r_nom * 0.99)
            magnitudes = top * np.arange(1, half + 1) / half
            levels = np.concatenate([-magnitudes[::-1], magnitudes])
            selector.connect_reference(number)
            v_list, i_list = [], []
            for v in np.repeat(levels, settings.repeats):
                reading = smu.read_current(float(v))
                if reading.compliance:
                    compliance_hits += 1
                    continue
                v_list.append(float(v))
                i_list.append(reading.current_a)
            if len(v_list) < 4:
                raise CalibrationError(
                    f"reference {number}: {compliance_hits} readings hit the current limit; "
                    "check the compliance and the reference"
                )
            slopes[number] = _line_fit(np.array(v_list), np.array(i_list))
            levels_used[str(number)] = [float(v) for v in levels]
            done += 1
            if progress:
                progress(done, total, f"reference {number} ({r_nom:g} ohm)")
    finally:
        for action in (smu.output_off, selector.ground_all):
            try:
                action()
            except Exception as exc:  # best effort; the first error is the one raised
                log.warning("SMU calibration clean-up: %s", exc)

    # offsets: open circuit b0 = o_I, every reference b_n = o_I + s_n o_V'  (weighted LS)
    rows = [[1.0, 0.0]]
    rhs = [offset_open]
    weights = [1.0 / max(u_offset_open, 1e-18) ** 2]
    for s, b, _u_s, u_b, _sigma in slopes.values():
        rows.append([1.0, s])
        rhs.append(b)
        weights.append(1.0 / max(u_b, 1e-18) ** 2)
    a = np.array(rows)
    w = np.array(weights)
    normal = a.T @ (a * w[:, None])
    cov = np.linalg.inv(normal)
    current_offset, voltage_offset = cov @ (a.T @ (w * np.array(rhs)))
    u_current_offset, u_voltage_offset = np.sqrt(np.diag(cov))

    s_std, _b, u_s_std, _u_b, _sigma = slopes[certificate.number]
    k = s_std * certificate.value_ohm
    rel_k = math.hypot(u_s_std / s_std, certificate.uncertainty_ohm / certificate.value_ohm)
    reference = np.full(REFERENCES, np.nan)
    u_reference = np.full(REFERENCES, np.nan)
    residual = np.full(REFERENCES, np.nan)
    for number, (s, _b, u_s, _u_b, sigma) in slopes.items():
        reference[number - 1] = k / s
        if number == certificate.number:  # exactly the certificate, by construction
            u_reference[number - 1] = certificate.uncertainty_ohm
        else:
            u_reference[number - 1] = k / s * math.hypot(rel_k, u_s / s)
        residual[number - 1] = sigma
    info = {
        "settings": asdict(settings),
        "certificate": asdict(certificate),
        "levels_v": levels_used,
        "compliance_hits": compliance_hits,
        "duration_s": time.monotonic() - started,
        "read_voltage_v": limits.read_voltage_v,
        "compliance_a": limits.compliance_a,
        "model": "I_read = current_offset_a + conductance_gain * (V_set + voltage_offset_v) / R",
        "note": "a resistance standard fixes the product of the voltage and current gains only",
    }
    log.info(
        "SMU %s calibrated: k = %.6f, offsets %.3g A, %.3g V",
        identities["smu"],
        k,
        current_offset,
        voltage_offset,
    )
    return CalibrationRecord(
        kind="smu",
        identities=identities,
        primary="smu",
        created_utc=format_utc(utc_now()),
        valid_days=valid_days,
        values={
            "current_offset_a": float(current_offset),
            "voltage_offset_v": float(voltage_offset),
            "conductance_gain": float(k),
            "reference_ohm": reference,
            "reference_nominal_ohm": nominal,
            "reference_residual_a": residual,
        },
        uncertainties={
            "current_offset_a": float(u_current_offset),
            "voltage_offset_v": float(u_voltage_offset),
            "conductance_gain": float(k * rel_k),
            "reference_ohm": u_reference,
        },
        units={
            "current_offset_a": "A",
            "voltage_offset_v": "V",
            "conductance_gain": "1",
            "reference_ohm": "ohm",
            "reference_nominal_ohm": "ohm",
            "reference_residual_a": "A",
        },
        operator=operator,
        temperature_c=temperature,
        info=info,
        software_version=software_version,
    )
