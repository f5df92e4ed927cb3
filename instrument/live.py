"""The lab as one live object for interactive front ends (the GUI): connect the configured
instruments, electroporate, record. No Qt here, and no second implementation of anything:
it opens instruments with :func:`instrument.connect.open_instrument`, records with
:class:`instrument.acquisition.Acquisition` into :mod:`instrument.session_files` folders,
and electroporates through the board driver's safety-checked
:meth:`drivers.cnea_board.CneaBoard.electroporate` — the same calls ``brainpaste record``
makes.

Every method may be called from any thread (one operation at a time: a lock); the ones
that touch an instrument do I/O and may block for up to the instrument's timeout, so a
GUI calls them from a worker thread. :meth:`LiveLab.states` and :attr:`LiveLab.recording`
are cheap and never block on I/O.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from drivers.cnea_board import CneaBoard
from drivers.errors import DriverError
from instrument.acquisition import Acquisition, AcquisitionSettings, AcquisitionStatus
from instrument.calibration_use import CneaCalibration, calibration_settings
from instrument.config import ConfigError, LabConfig, parse_section
from instrument.connect import open_instrument
from instrument.imprint_control import ImprintProcess
from instrument.session_files import new_session_dir, session_file_for_output

log = logging.getLogger(__name__)

BOARD_DRIVER = "cnea_board"


LIVE_DEFAULTS: dict[str, Any] = {"block_samples": 512, "window_s": 0.4096}
"""Where an interactive recording differs from ``brainpaste record``, unless the lab's
``[acquisition]`` table says otherwise: 512-sample blocks (the whole-array raster and the
live statistics, which follow written blocks, update every 51 ms instead of 102 ms; the
live traces get each frame before any block is written) and a 0.41 s live window (the GUI
keeps the longer history of its traces itself). bench/gui_fps.py measures both."""


def acquisition_settings(config: LabConfig, **overrides: Any) -> AcquisitionSettings:
    """The lab's ``[acquisition]`` settings (as ``brainpaste record`` reads them), with
    ``overrides`` (AcquisitionSettings fields) on top."""
    settings = parse_section(AcquisitionSettings, config, "acquisition")
    return replace(settings, **overrides) if overrides else settings


def live_settings(config: LabConfig) -> AcquisitionSettings:
    """The settings of an interactive recording: the lab's, with :data:`LIVE_DEFAULTS` for
    the keys its ``[acquisition]`` table does not set."""
    table = config.sections.get("acquisition", {})
    base = parse_section(AcquisitionSettings, config, "acquisition")
    defaults = {k: v for k, v in LIVE_DEFAULTS.items() if k not in table}
    return replace(base, **defaults)


class LiveLabError(RuntimeError):
    """An operation the lab cannot do in its present state (says what to do first)."""


@dataclass(frozen=True)
class InstrumentState:
    """One configured instrument as the operator sees it."""

    name: str
    driver: str
    resource: str
    emulated: bool
    state: str = "disconnected"
    """disconnected, connecting, connected or error."""
    identity: str = ""
    """``*IDN?`` of the connected instrument."""
    error: str = ""
    """The last error on this instrument (type: message), "" when none."""


@dataclass(frozen=True)
class Electroporation:
    """What an electroporation did: the channels pulsed and their access before and after."""

    channels: np.ndarray
    amplitude_v: float
    width_s: float
    access_before: np.ndarray
    """(len(channels),) access 0..1 before the pulse."""
    access_after: np.ndarray

    @property
    def opened(self) -> int:
        """Pulsed channels with access after the pulse."""
        return int(np.count_nonzero(self.access_after > 0))


def grid_shape(positions_m: np.ndarray) -> tuple[int, int]:
    """(rows, cols) of an electrode grid whose channel index is ``row * cols + col``.

    Inferred from the distinct x and y of the positions; a layout that is not a full grid
    in that order is shown as one row.
    """
    pos = np.asarray(positions_m, dtype=float).reshape(-1, 2)
    n = pos.shape[0]
    if n == 0:
        return (0, 0)
    cols = len(np.unique(np.round(pos[:, 0], 9)))
    rows = len(np.unique(np.round(pos[:, 1], 9)))
    if rows * cols == n and cols > 0:
        order = np.lexsort((pos[:, 0], pos[:, 1]))  # by y, then x
        if np.array_equal(order, np.arange(n)):
            return (rows, cols)
    return (1, n)


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of an exception, as shown next to the instrument that raised it."""
    return f"{type(exc).__name__}: {exc}"


class LiveLab:
    """The configured instruments, connected on demand, and the current recording.

    ``config`` is a lab configuration (from a file, or from
    :func:`instrument.embedded_lab.embedded_lab`); ``board`` names its CNEA board.
    """

    def __init__(self, config: LabConfig, *, board: str = "cnea", source: str = "") -> None:
        self.config = config
        self.board_name = board
        self.source = source or config.source or "(built in code)"
        """Where the configuration came from, for display."""
        self._lock = threading.RLock()
        self._drivers: dict[str, Any] = {}
        self._states: dict[str, InstrumentState] = {
            name: InstrumentState(name, inst.driver, inst.resource, inst.emulated)
            for name, inst in config.instruments.items()
        }
        self._recording: Acquisition | None = None
        self._positions: np.ndarray | None = None

    # --- instruments ---------------------------------------------------------------------
    def states(self) -> list[InstrumentState]:
        """Every configured instrument's state (a copy; never blocks on I/O)."""
        return list(self._states.values())

    def state(self, name: str) -> InstrumentState:
        try:
            return self._states[name]
        except KeyError:
            raise ConfigError(
                f"no instrument {name!r} (have: {', '.join(self._states) or 'none'})",
                key=f"instruments.{name}",
            ) from None

    def _set(self, name: str, **changes: Any) -> InstrumentState:
        state = replace(self._states[name], **changes)
        self._states[name] = state
        return state

    def connect(self, name: str) -> InstrumentState:
        """Open instrument ``name`` and read its identity. A failure is recorded in its
        state (shown where it happened) and raised."""
        with self._lock:
            self.state(name)
            if name in self._drivers:
                return self._states[name]
            self._set(name, state="connecting", error="")
            try:
                driver = open_instrument(self.config, name)
            except (DriverError, ConfigError, OSError, ValueError) as exc:
                self._set(name, state="error", error=describe_error(exc))
                log.error("%s: could not connect: %s", name, exc)
                raise
            try:
                identity = str(driver.identify())
                if name == self.board_name:
                    self._positions = np.asarray(driver.positions())
            except (DriverError, OSError, ValueError) as exc:
                self._set(name, state="error", error=describe_error(exc))
                log.error("%s: connected but did not identify: %s", name, exc)
                _close_quietly(name, driver)
                raise
            self._drivers[name] = driver
            log.info("%s: connected (%s)", name, identity)
            return self._set(name, state="connected", identity=identity, error="")

    def connect_all(self) -> list[InstrumentState]:
        """Connect every configured instrument; failures are kept in each one's state (no
        raise), so one missing instrument does not hide the others."""
        for name in list(self._states):
            with contextlib.suppress(DriverError, ConfigError, OSError, ValueError):
                self.connect(name)  # the failure is in the instrument's state
        return self.states()

    def disconnect(self, name: str) -> InstrumentState:
        """Close instrument ``name`` (its driver leaves it in its safe state)."""
        with self._lock:
            self.state(name)
            if name == self.board_name and self.is_recording:
                raise LiveLabError("stop the recording before disconnecting the board")
            driver = self._drivers.pop(name, None)
            if driver is None:
                return self._set(name, state="disconnected")
            error = _close_quietly(name, driver)
            log.info("%s: disconnected", name)
            return self._set(name, state="error" if error else "disconnected", error=error)

    def disconnect_all(self) -> list[InstrumentState]:
        """Stop any recording, then close every instrument."""
        with self._lock:
            if self.is_recording:
                self.stop_recording("disconnect")
            for name in list(self._drivers):
                self.disconnect(name)
            return self.states()

    def note_error(self, name: str, exc: BaseException) -> None:
        """Record an error that happened while using instrument ``name``."""
        if name in self._states:
            self._set(name, error=describe_error(exc))

    @property
    def board(self) -> CneaBoard:
        """The connected CNEA board."""
        driver = self._drivers.get(self.board_name)
        if driver is None:
            raise LiveLabError(f"connect the board ({self.board_name!r}) first")
        return driver

    @property
    def has_board(self) -> bool:
        return self.board_name in self._drivers

    @property
    def positions_m(self) -> np.ndarray | None:
        """(C, 2) electrode positions of the connected board (None before it connects)."""
        return self._positions

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the board's electrode grid; (0, 0) before it connects."""
        return grid_shape(self._positions) if self._positions is not None else (0, 0)

    # --- the array -------------------------------------------------------------------------
    def access(self) -> np.ndarray:
        """(C,) measured access of each electrode to a cell, 0..1."""
        try:
            return np.asarray(self.board.access())
        except DriverError as exc:
            self.note_error(self.board_name, exc)
            raise

    def electroporate(
        self, channels: np.ndarray | list[int], amplitude_v: float = 2.5, width_s: float = 1e-3
    ) -> Electroporation:
        """One electroporation pulse on ``channels`` (the board's safety limits apply before
        anything is sent); returns their access before and after."""
        chans = np.unique(np.asarray(channels, dtype=np.int64))
        if chans.size == 0:
            raise LiveLabError("select the electrodes to electroporate first")
        board = self.board
        try:
            before = np.asarray(board.access())[chans]
            board.electroporate(chans, amplitude_v, width_s)
            after = np.asarray(board.access())[chans]
        except DriverError as exc:
            self.note_error(self.board_name, exc)
            raise
        result = Electroporation(chans, float(amplitude_v), float(width_s), before, after)
        log.info(
            "electroporated %d electrodes (%g V, %g ms): access on %d (was %d)",
            chans.size,
            amplitude_v,
            width_s * 1e3,
            result.opened,
            int(np.count_nonzero(before > 0)),
        )
        return result

    # --- recording -------------------------------------------------------------------------
    @property
    def recording(self) -> Acquisition | None:
        """The current acquisition, or the last one (stopped), or None."""
        return self._recording

    @property
    def is_recording(self) -> bool:
        acq = self._recording
        return acq is not None and acq.state in ("recording", "stopping")

    def start_recording(
        self,
        out_dir: str | Path | None = None,
        *,
        label: str = "",
        duration_s: float | None = None,
        settings: AcquisitionSettings | None = None,
    ) -> Acquisition:
        """Start recording the board into a new session folder (``out_dir``, or a fresh
        ``data_dir/<date-time>[-label]``) with ``settings`` (default:
        :func:`live_settings`); returns the running acquisition."""
        with self._lock:
            if self.is_recording:
                raise LiveLabError("already recording; stop first")
            if duration_s is not None and not duration_s > 0:
                raise ValueError(f"duration must be > 0 s, got {duration_s}")
            folder = Path(out_dir) if out_dir else new_session_dir(self.config.lab.data_dir, label)
            path = session_file_for_output(folder)
            acq = Acquisition(
                self.board,
                path,
                duration_s=duration_s,
                settings=settings or live_settings(self.config),
                calibration=CneaCalibration(calibration_settings(self.config), self.board_name),
            )
            try:
                acq.start()
            except (DriverError, OSError, ValueError, RuntimeError) as exc:
                self.note_error(self.board_name, exc)
                raise
            finally:
                self._recording = acq
            log.info("recording to %s", path)
            return acq

    def stop_recording(self, reason: str = "requested") -> AcquisitionStatus:
        """Stop the recording (the board's last frames are kept); returns its final status."""
        with self._lock:
            acq = self._recording
            if acq is None:
                raise LiveLabError("nothing is recording")
            acq.stop(reason)
            status = acq.status()
            if acq.error is not None:
                self.note_error(self.board_name, acq.error)
            log.info("recording stopped (%s): %s", status.stop_reason, acq.path)
            return status

    # --- imprint ---------------------------------------------------------------------------
    def release_rig(self) -> list[str]:
        """Disconnect every instrument but the board (the imprint process drives the rig
        over its own connections); the names released."""
        with self._lock:
            names = [n for n in self._drivers if n != self.board_name]
            for name in names:
                self.disconnect(name)
            return names

    def start_imprint(
        self,
        session_file: str | Path,
        technology: str | None = None,
        *,
        resume: bool = False,
        restart: bool = False,
    ) -> ImprintProcess:
        """Run ``brainpaste imprint`` on ``session_file`` with this lab's instruments (the
        rig is released first); see :mod:`instrument.imprint_control`."""
        technology = technology or self.config.crossbar.technology
        released = self.release_rig()
        if released:
            log.info("released %s for the imprint", ", ".join(released))
        return ImprintProcess(session_file, self.config, technology, resume=resume, restart=restart)

    def close(self) -> None:
        """Stop recording and close every instrument (safe to call twice)."""
        self.disconnect_all()


def _close_quietly(name: str, driver: Any) -> str:
    """Close a driver; the error text if it failed ("" otherwise)."""
    try:
        driver.close()
    except (DriverError, OSError) as exc:
        log.warning("%s: close failed: %s", name, exc)
        return describe_error(exc)
    return ""
