"""Open the crossbar programming rig a lab configuration describes.

``open_rig(config)`` opens instrument ``"smu"`` and instrument ``"selector"`` with
their configured drivers, builds the :class:`~drivers.limits.SafetyLimits` of the
crossbar's technology (``[technology.<name>]``) and returns a configured
:class:`~drivers.crossbar_rig.CrossbarRig`. Use it as a context manager: leaving
it turns the output off and grounds every line.
"""

from __future__ import annotations

from drivers.crossbar_rig import CrossbarRig
from drivers.limits import SafetyLimits
from drivers.selector import CrossbarSelector
from drivers.smu import SMU
from instrument.calibration_use import calibration_settings, install_rig
from instrument.config import ConfigError, LabConfig
from instrument.connect import open_instrument


def safety_limits(config: LabConfig, technology: str | None = None) -> SafetyLimits:
    """The driver-layer limits of ``technology`` (the crossbar's when not given)."""
    t = config.limits(technology)
    return SafetyLimits(
        max_voltage_v=t.max_voltage_v,
        compliance_a=t.compliance_a,
        pulse_width_min_s=t.pulse_width_min_s,
        pulse_width_max_s=t.pulse_width_max_s,
        read_voltage_v=t.read_voltage_v,
    )


def rig_instruments(number: int) -> tuple[str, str]:
    """Instrument names of rig ``number`` (0-based): ``smu``/``selector``, then ``smu2``/
    ``selector2``, ``smu3``/``selector3``… (several rigs program tiles at once)."""
    return ("smu", "selector") if number == 0 else (f"smu{number + 1}", f"selector{number + 1}")


def open_rig(
    config: LabConfig,
    *,
    technology: str | None = None,
    nplc: float = 0.01,
    smu: str = "smu",
    selector: str = "selector",
    calibration: bool = True,
) -> CrossbarRig:
    """The configured rig, its SMU and selector opened and set to a known, safe state
    (instruments ``smu`` and ``selector`` of the configuration; see :func:`rig_instruments`).

    With ``calibration``, the SMU's and the crossbar's calibration records are looked up
    (``[calibration]``) and every read goes through them
    (:func:`instrument.calibration_use.install_rig`); ``False`` reads raw (calibrating)."""
    limits = safety_limits(config, technology)
    smu_name, selector_name = smu, selector
    smu = open_instrument(config, smu_name)
    if not isinstance(smu, SMU):
        smu.close()
        raise ConfigError(
            f"instrument {smu_name!r} uses driver {config.instrument(smu_name).driver!r}, "
            "not an SMU",
            key=f"instruments.{smu_name}.driver",
            path=config.source or None,
        )
    try:
        selector = open_instrument(config, selector_name)
    except BaseException:
        smu.close()
        raise
    if not isinstance(selector, CrossbarSelector):
        smu.close()
        selector.close()
        raise ConfigError(
            f"instrument {selector_name!r} uses driver "
            f"{config.instrument(selector_name).driver!r}, not crossbar_selector",
            key=f"instruments.{selector_name}.driver",
            path=config.source or None,
        )
    try:
        rig = CrossbarRig(smu, selector, limits, bias=config.crossbar.bias_scheme, nplc=nplc)
    except BaseException:
        smu.close()
        selector.close()
        raise
    expected = (config.crossbar.rows, config.crossbar.cols)
    if (rig.rows, rig.cols) != expected:
        rig.close()
        raise ConfigError(
            f"the selector reports a {rig.rows}x{rig.cols} array; [crossbar] says "
            f"{expected[0]}x{expected[1]}",
            key="crossbar.rows",
            path=config.source or None,
        )
    if calibration:
        try:
            install_rig(
                rig,
                calibration_settings(config),
                smu_name=smu_name,
                selector_name=selector_name,
                architecture=config.crossbar.architecture,
                technology=technology or config.crossbar.technology,
            )
        except BaseException:
            rig.close()
            raise
    return rig
