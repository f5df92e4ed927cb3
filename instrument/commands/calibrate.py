"""``brainpaste calibrate cnea|smu|crossbar``: measure instruments, keep the records, report.

``--sim`` calibrates the embedded emulated lab, ``--config lab.toml`` the bench that file
names (both: the emulated lab, with the file's other tables: store, crossbar, limits).
Each record is filed in the ``[calibration]`` store (where acquisition, extraction and
imprint find it; ``--no-store`` to keep it out) and written with its report and plots to
``--out DIR/<record id>/`` (default: the store's ``reports`` folder). With ``--sim`` the
report also compares recordings / reads / resistances with the emulator's hidden truth
before and after applying the record.

* ``cnea`` — the board ``--instrument`` (default ``cnea``);
* ``smu`` — the SMU of every rig (``--rig all``) or of rig ``--rig N``, against its
  selector board's reference resistors;
* ``crossbar`` — the array of every rig (or rig N), through its SMU's record (calibrated
  first when the store has no usable one); ``--no-cells`` skips the cell windows, which
  rewrite every cell.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import instrument
from calibration.cnea import CneaSettings, calibrate_cnea, channel_calibration
from calibration.crossbar import CrossbarSettings, PulseRecipe, RigCorrection, calibrate_crossbar
from calibration.records import CalibrationError, CalibrationRecord, InstrumentIdentity
from calibration.report import Evaluation, summary_lines, write_report
from calibration.smu import SmuCorrection, calibrate_smu
from calibration.store import CalibrationStore, save_record
from drivers.cnea_board import CneaBoard
from drivers.cnea_frames import Frame
from drivers.errors import DriverError
from instrument.calibration_use import CalibrationSettings, calibration_settings
from instrument.config import ConfigError, LabConfig, load
from instrument.connect import open_instrument
from instrument.rig import open_rig, rig_instruments

KINDS = ("cnea", "smu", "crossbar")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate", help="calibrate the CNEA board, the SMUs or the crossbars; keep the records"
    )
    p.add_argument("kind", choices=KINDS, help="what to calibrate")
    p.add_argument("--sim", action="store_true", help="the embedded emulated lab")
    p.add_argument(
        "--config",
        metavar="LAB.TOML",
        help="the lab file (its instruments; with --sim only its other tables)",
    )
    p.add_argument(
        "--out", metavar="DIR", help="folder for records, reports, plots (default STORE/reports)"
    )
    p.add_argument("--instrument", default="cnea", help="cnea: the board's name (cnea)")
    p.add_argument("--rig", default="all", help="smu/crossbar: rig number 0, 1… or all (all)")
    p.add_argument("--operator", default=None, help="who calibrates (default: [lab] operator)")
    p.add_argument("--no-store", action="store_true", help="do not file the record in the store")
    p.add_argument(
        "--no-cells", action="store_true", help="crossbar: no cell windows (they rewrite cells)"
    )
    p.add_argument("--seed", type=int, default=1, help="with --sim: seed of the emulated lab")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


class _Bar:
    """A tqdm bar fed by a procedure's ``progress(done, total, what)``."""

    def __init__(self, desc: str, disable: bool) -> None:
        self.bar = tqdm(desc=desc, unit="step", disable=disable, file=sys.stderr, leave=False)

    def __call__(self, done: int, total: int, what: str) -> None:
        self.bar.total = total
        self.bar.n = done
        self.bar.set_postfix_str(what, refresh=True)

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def _progress(desc: str, disable: bool) -> Iterator[_Bar]:
    bar = _Bar(desc, disable)
    try:
        yield bar
    finally:
        bar.close()


@dataclasses.dataclass
class _Context:
    config: LabConfig
    settings: CalibrationSettings
    args: argparse.Namespace
    lab: Any = None
    """The emulated lab (--sim): its hidden truth goes into the report, never the procedure."""

    @property
    def operator(self) -> str:
        return self.args.operator if self.args.operator is not None else self.config.lab.operator

    @property
    def store(self) -> CalibrationStore:
        return self.settings.open_store()

    @property
    def out(self) -> Path:
        return Path(self.args.out) if self.args.out else Path(self.settings.store) / "reports"


def run(args: argparse.Namespace) -> int:
    if not args.sim and not args.config:
        print("error: give --sim (the emulated lab) or --config LAB.TOML", file=sys.stderr)
        return 2
    try:
        if args.sim:
            from instrument.embedded_lab import embedded_lab

            base = load(args.config)
            base = dataclasses.replace(
                base, instruments={k: v for k, v in base.instruments.items() if v.emulated}
            )
            rig = {
                "rows": base.crossbar.rows,
                "cols": base.crossbar.cols,
                "architecture": base.crossbar.architecture,
                "technology": base.crossbar.technology,
            }
            with embedded_lab(base, seed=args.seed, options={"rig": rig}) as (config, lab):
                return _calibrate(_Context(config, calibration_settings(config), args, lab))
        config = load(args.config)
        return _calibrate(_Context(config, calibration_settings(config), args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (DriverError, CalibrationError, OSError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _calibrate(ctx: _Context) -> int:
    kind = ctx.args.kind
    if kind == "cnea":
        outcomes = [_cnea(ctx)]
    else:
        outcomes = [(_smu if kind == "smu" else _crossbar)(ctx, k) for k in _rigs(ctx)]
    for record, evaluations in outcomes:
        _keep(ctx, record, evaluations)
    return 0


def _rigs(ctx: _Context) -> list[int]:
    present = [k for k in range(64) if rig_instruments(k)[0] in ctx.config.instruments]
    if not present:
        raise ConfigError("no [instruments.smu] (and selector) in the configuration")
    if ctx.args.rig == "all":
        return present
    try:
        number = int(ctx.args.rig)
    except ValueError:
        raise ConfigError(f"--rig {ctx.args.rig!r}: a rig number (0, 1…) or all") from None
    if number not in present:
        raise ConfigError(f"--rig {number}: the configuration has rigs {present}")
    return [number]


def _keep(ctx: _Context, record: CalibrationRecord, evaluations: list[Evaluation]) -> None:
    """File the record, write it with its report, print the summary."""
    folder = ctx.out / record.record_id
    save_record(record, folder / "record.h5")
    (folder / "record.json").write_text(record.to_json())
    written = write_report(record, folder, evaluations)
    stored = "" if ctx.args.no_store else str(ctx.store.save(record))
    print("\n".join(summary_lines(record)))
    for ev in evaluations:
        print(ev.summary())
        for line in ev.lines:
            print(f"  {line}")
    if stored:
        print(f"filed in the calibration store: {stored}")
    print("wrote " + ", ".join(str(p) for p in [folder / "record.h5", *written]))


def _software() -> str:
    return f"brainpaste {instrument.__version__}"


# --- the CNEA board -----------------------------------------------------------------------------


def _cnea(ctx: _Context) -> tuple[CalibrationRecord, list[Evaluation]]:
    name = ctx.args.instrument
    inst = ctx.config.instrument(name)
    if inst.driver != "cnea_board":
        raise ConfigError(
            f"instrument {name!r} uses driver {inst.driver!r}, not cnea_board",
            key=f"instruments.{name}.driver",
        )
    board = open_instrument(ctx.config, name)
    try:
        with _progress(f"calibrate {name}", ctx.args.no_progress) as bar:
            record = calibrate_cnea(
                board,
                CneaSettings(),
                operator=ctx.operator,
                valid_days=ctx.settings.cnea_valid_days,
                software_version=_software(),
                progress=bar,
            )
        evaluations = _evaluate_cnea(board, record) if ctx.lab is not None else []
    finally:
        board.close()
    return record, evaluations


def _live_codes(board: CneaBoard, frames: int) -> np.ndarray:
    """(n, C) codes of ``frames`` frames of whatever is at the inputs now."""
    stream = board.open_stream()
    got: list[np.ndarray] = []
    try:
        first = board.start(stream)
        deadline = time.monotonic() + 30.0
        for item in stream:
            if isinstance(item, Frame) and item.first_sample >= first:
                got.append(item.samples)
            if len(got) >= frames or time.monotonic() > deadline:
                break
    finally:
        board.stop()
        stream.close()
    return np.concatenate(got) if got else np.zeros((0, board.n_channels), dtype=np.int16)


def _evaluate_cnea(board: CneaBoard, record: CalibrationRecord) -> list[Evaluation]:
    """Emulated board only: a short recording, in volts with nominal and with calibrated
    gains and offsets, against the inputs' true values (the board's hidden gain/offset)."""
    found = board.truth()
    if found is None or "board_gain_factor" not in found[0]:
        return []
    truth, attrs = found
    modes, gain_setting = board.modes(), board.gain
    nominal_gain, nominal_offset = board.nominal_gain(), board.nominal_offset()
    codes = _live_codes(board, 64).astype(float)
    cols = np.arange(modes.size)
    true_gain = nominal_gain * truth["board_gain_factor"][modes, cols]
    true_offset = truth["board_offset"][modes, cols]
    cal = channel_calibration(record, modes, gain_setting, nominal_gain, nominal_offset)
    keep = cal.calibrated & (np.abs(codes) < 32767).all(axis=0)
    real = codes * true_gain + true_offset
    before = (codes * nominal_gain + nominal_offset - real)[:, keep]
    after = (codes * cal.gain + cal.offset - real)[:, keep]
    faults = np.asarray(truth.get("board_amplifier_fault", np.zeros(modes.size, bool)))
    bad = np.asarray(record.values["bad_channels"])
    lines = [
        f"{codes.shape[0]} samples of {int(keep.sum())} channels of the emulated culture",
        f"broken amplifiers found: {int((bad & faults).sum())} of {int(faults.sum())}; other "
        f"channels marked bad: {int((bad & ~faults).sum())} (the emulator has "
        f"{attrs.get('n_saturated_channels', '?')} saturated electrodes)",
    ]
    return [
        Evaluation("recorded volts vs the true input", before, after, "µV", 1e6, lines),
    ]


# --- SMUs ---------------------------------------------------------------------------------------


def _smu(ctx: _Context, number: int) -> tuple[CalibrationRecord, list[Evaluation]]:
    smu_name, selector_name = rig_instruments(number)
    with open_rig(ctx.config, smu=smu_name, selector=selector_name, calibration=False) as rig:
        record = _calibrate_smu(ctx, rig, smu_name)
        evaluations = []
        if ctx.lab is not None:
            evaluations = [_evaluate_smu(rig, record, _device(ctx.lab, selector_name))]
    return record, evaluations


def _device(lab: Any, name: str) -> Any:
    """An emulated instrument's device object (its hidden truth), by instrument name."""
    return lab.instruments[name].servers[0].device


def _evaluate_smu(rig: Any, record: CalibrationRecord, selector: Any) -> Evaluation:
    """Each reference read at the read voltage, as a resistance, against its hidden value."""
    correction = SmuCorrection.from_record(record)
    v = rig.limits.read_voltage_v
    before, after = [], []
    for number in range(1, len(selector.reference_ohm) + 1):
        current = np.mean([rig.read_reference(number).current_a for _ in range(8)])
        true = selector.reference_ohm[number - 1]
        before.append(v / current / true - 1)
        after.append(1 / correction.conductance(np.array([current]), v)[0] / true - 1)
    lines = [
        "reference "
        + ", ".join(
            f"{k + 1}: {b * 1e6:+.0f} → {a * 1e6:+.1f} ppm"
            for k, (b, a) in enumerate(zip(before, after, strict=True))
        )
    ]
    return Evaluation(
        "resistance measured by the SMU vs the references' hidden values",
        np.array(before),
        np.array(after),
        "ppm",
        1e6,
        lines,
    )


# --- crossbars ----------------------------------------------------------------------------------


def _crossbar(ctx: _Context, number: int) -> tuple[CalibrationRecord, list[Evaluation]]:
    from instrument.imprint.run import make_plan

    smu_name, selector_name = rig_instruments(number)
    technology = ctx.config.crossbar.technology
    plan = make_plan(ctx.config, technology)
    limits = ctx.config.limits(technology)
    settings = CrossbarSettings(
        architecture=ctx.config.crossbar.architecture,
        technology=technology,
        cells=not ctx.args.no_cells,
        up=PulseRecipe(*plan.algorithm.probe_pulse(True)),
        down=PulseRecipe(*plan.algorithm.probe_pulse(False)),
        window_g_min_s=limits.g_min_s,
        window_g_max_s=limits.g_max_s,
        read_bias=plan.access.read_bias,
        pulse_bias=plan.access.pulse_bias,
    )
    with open_rig(ctx.config, smu=smu_name, selector=selector_name, calibration=False) as rig:
        smu_record = _smu_record_for(ctx, rig, smu_name)
        with _progress(f"calibrate the crossbar of {selector_name}", ctx.args.no_progress) as bar:
            record = calibrate_crossbar(
                rig,
                SmuCorrection.from_record(smu_record),
                settings,
                operator=ctx.operator,
                valid_days=ctx.settings.crossbar_valid_days,
                software_version=_software(),
                progress=bar,
            )
        evaluations = []
        if ctx.lab is not None:
            evaluations = [
                _evaluate_crossbar(
                    rig,
                    smu_record,
                    record,
                    ctx.lab.instruments[smu_name].model,
                    ctx.settings,
                    settings,
                )
            ]
    return record, evaluations


def _smu_record_for(ctx: _Context, rig: Any, smu_name: str) -> CalibrationRecord:
    """The rig SMU's valid record from the store, or a fresh calibration (filed too)."""
    identity = InstrumentIdentity.from_idn(rig.smu.identify())
    chosen = ctx.store.select("smu", {"smu": identity}, primary="smu")
    if chosen.record is not None and chosen.status == "ok" and not ctx.args.no_store:
        print(f"{smu_name}: using SMU record {chosen.record.record_id}", file=sys.stderr)
        return chosen.record
    print(f"{smu_name}: {chosen.message()}; calibrating the SMU first", file=sys.stderr)
    record = _calibrate_smu(ctx, rig, smu_name)
    _keep(ctx, record, [])
    return record


def _calibrate_smu(ctx: _Context, rig: Any, smu_name: str) -> CalibrationRecord:
    """Calibrate the rig's SMU against the selector's references, with a progress bar."""
    with _progress(f"calibrate {smu_name}", ctx.args.no_progress) as bar:
        return calibrate_smu(
            rig.smu,
            rig.selector,
            rig.limits,
            operator=ctx.operator,
            valid_days=ctx.settings.smu_valid_days,
            software_version=_software(),
            progress=bar,
        )


def _evaluate_crossbar(
    rig: Any,
    smu_record: CalibrationRecord,
    record: CalibrationRecord,
    array: Any,
    settings: CalibrationSettings,
    procedure: CrossbarSettings,
) -> Evaluation:
    """Whole-array reads (mean of 8), raw and through the records, against each cell's true
    conductance (device in series with its access transistor: what a 1T1R cell is), with the
    cells moved up their window first (the wires matter most at high conductance)."""
    reads: Callable[[], np.ndarray] = lambda: np.mean(  # noqa: E731
        [rig.read_array() for _ in range(8)], axis=0
    )
    rig.read_correction = None
    up = procedure.up
    if up is not None and procedure.cells:
        cells = [
            (r, c) for r in range(rig.rows) for c in range(rig.cols) for _ in range(up.repeats)
        ]
        rig.selector.bias = procedure.pulse_bias
        rig.pulse_train(cells, [up.amplitude_v] * len(cells), up.width_s, read=False)
    rig.selector.bias = procedure.read_bias
    raw = reads()
    rig.read_correction = RigCorrection.from_records(
        smu_record,
        record,
        wire=settings.crossbar_wire_correction and array.architecture == "1t1r",
    )
    try:
        corrected = reads()
    finally:
        rig.read_correction = None
    g = array.conductance()
    cell = g / (1 + g * array.access_resistance_ohm)
    free = array.stuck == 0
    return Evaluation(
        "crossbar reads vs the cells' true conductance (relative)",
        (raw / cell - 1)[free],
        (corrected / cell - 1)[free],
        "%",
        100.0,
        [
            f"{int(free.sum())} free cells, each the mean of 8 reads, moved up their window",
            *_stuck_line(record, array),
        ],
    )


def _stuck_line(record: CalibrationRecord, array: Any) -> list[str]:
    if "cell_status" not in record.values:
        return []
    found = np.asarray(record.values["cell_status"]) != 0
    stuck = np.asarray(array.stuck) != 0
    return [
        f"stuck cells found: {int((found & stuck).sum())} of the emulator's {int(stuck.sum())}"
        f" (false alarms: {int((found & ~stuck).sum())})"
    ]


# --- the session's calibration stage ---------------------------------------------------------


def _valid(ctx: _Context, kind: str, identities: dict[str, Any], primary: str) -> str | None:
    """The id of a valid record in the store for these instruments, else None (a crossbar
    record must also be of this array's size, architecture and technology)."""
    chosen = ctx.store.select(kind, identities, primary=primary)
    record = chosen.record
    if record is None or chosen.check is None or not chosen.check.ok:
        return None
    if kind == "crossbar":
        crossbar = ctx.config.crossbar
        measured = record.info.get("settings", {})
        shape = np.shape(record.value("line_row_ohm")) + np.shape(record.value("line_col_ohm"))
        if shape != (crossbar.rows, crossbar.cols) or any(
            measured.get(key, now) != now
            for key, now in (
                ("architecture", crossbar.architecture),
                ("technology", crossbar.technology),
            )
        ):
            return None
    return record.record_id


def ensure_records(
    config: LabConfig,
    *,
    out: Path,
    lab: Any = None,
    cells: bool = False,
    progress: bool = True,
    operator: str | None = None,
) -> dict[str, str]:
    """Use the store's valid records; calibrate (and file) every instrument that has none.

    The session's calibration stage. ``cells`` also measures the crossbar cells' windows
    (they rewrite every cell; the imprint characterizes its cells anyway). Returns, per
    instrument, what was used ("record <id>" or "calibrated <id>").
    """
    args = argparse.Namespace(
        kind="",
        instrument="cnea",
        rig="all",
        operator=operator,
        no_store=False,
        no_cells=not cells,
        no_progress=not progress,
        out=str(out),
        seed=1,
    )
    ctx = _Context(config, calibration_settings(config), args, lab)
    used: dict[str, str] = {}
    if "cnea" in config.instruments:
        board = open_instrument(config, "cnea")
        try:
            identity = board.identify()
        finally:
            board.close()
        found = _valid(ctx, "cnea", {"cnea": identity}, "cnea")
        if found is None:
            record, evaluations = _cnea(ctx)
            _keep(ctx, record, evaluations)
            found = f"calibrated {record.record_id}"
        else:
            found = f"record {found}"
        used["cnea"] = found
    for number in [k for k in range(64) if rig_instruments(k)[0] in config.instruments]:
        smu_name, selector_name = rig_instruments(number)
        with open_rig(config, smu=smu_name, selector=selector_name, calibration=False) as rig:
            smu_id, selector_id = rig.smu.identify(), rig.selector.identify()
        found = _valid(ctx, "smu", {"smu": smu_id}, "smu")
        if found is None:
            record, evaluations = _smu(ctx, number)
            _keep(ctx, record, evaluations)
            found = f"calibrated {record.record_id}"
        else:
            found = f"record {found}"
        used[smu_name] = found
        found = _valid(ctx, "crossbar", {"selector": selector_id}, "selector")
        if found is None:
            record, evaluations = _crossbar(ctx, number)
            _keep(ctx, record, evaluations)
            found = f"calibrated {record.record_id}"
        else:
            found = f"record {found}"
        used[selector_name] = found
    return used
