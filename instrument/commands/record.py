"""``brainpaste record``: record the CNEA board into a session folder (one HDF5 file, SWMR).

``--sim`` records from the embedded emulated lab (electroporating the array first
unless ``--no-electroporate``); ``--config lab.toml`` records from the board that file
names (real, or an emulator started with ``brainpaste sim``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from calibration.records import CalibrationError
from drivers.errors import DriverError
from instrument.acquisition import Acquisition, AcquisitionSettings, AcquisitionStatus
from instrument.calibration_use import CneaCalibration, calibration_settings
from instrument.config import ConfigError, LabConfig, load, parse_section
from instrument.connect import open_instrument
from instrument.session_files import SessionPathError, new_session_dir, session_file_for_output
from instrument.storage import DEFAULT_CODEC, StorageError, codec_options

CODECS = (
    "blosc-lz4-bitshuffle",
    "blosc-lz4-shuffle",
    "blosc2-lz4-bitshuffle",
    "zstd",
    "gzip",
    "none",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "record", help="record the CNEA board into a session folder (HDF5, readable while written)"
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--sim", action="store_true", help="record from the embedded emulated lab")
    source.add_argument("--config", metavar="LAB.TOML", help="record from this lab's board")
    p.add_argument("--duration", type=float, default=30.0, metavar="S", help="seconds of data (30)")
    p.add_argument("--out", metavar="DIR", help="session folder (default: data_dir/<date-time>)")
    p.add_argument("--instrument", default="cnea", help="the board's name in the configuration")
    p.add_argument(
        "--no-electroporate",
        action="store_true",
        help="with --sim: record without opening intracellular access first",
    )
    p.add_argument(
        "--electroporate-v", type=float, default=2.5, metavar="V", help="pulse amplitude (2.5 V)"
    )
    p.add_argument(
        "--electroporate-width", type=float, default=1e-3, metavar="S", help="pulse width (1 ms)"
    )
    p.add_argument("--seed", type=int, default=1, help="with --sim: seed of the emulated lab")
    p.add_argument(
        "--rate",
        default="1",
        help="with --sim: emulation speed, multiple of real time, or 'max' (default 1)",
    )
    p.add_argument(
        "--playback",
        metavar="FILE",
        help="with --sim: the board plays this session file instead of the culture",
    )
    p.add_argument(
        "--codec",
        choices=CODECS,
        help=f"trace compression (default [acquisition] codec, {DEFAULT_CODEC})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _sim_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"rate": args.rate}
    if args.playback:
        options.update(source="playback", playback_file=str(args.playback))
    return {"cnea": options}


def run(args: argparse.Namespace) -> int:
    if not args.duration > 0 or not math.isfinite(args.duration):
        print(f"error: --duration must be > 0 s, got {args.duration}", file=sys.stderr)
        return 2
    try:
        if args.out:
            session_file_for_output(args.out)  # refuse before starting anything
        if args.sim:
            from instrument.embedded_lab import embedded_lab

            with embedded_lab(seed=args.seed, options=_sim_options(args)) as (config, _lab):
                # a playback cannot respond to a pulse: electroporate the culture only
                electroporate = not args.no_electroporate and not args.playback
                return _record(config, args, electroporate=electroporate)
        return _record(load(args.config), args, electroporate=False)
    except (ConfigError, SessionPathError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (DriverError, StorageError, CalibrationError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


class _Progress:
    """A tqdm bar over data seconds: data rate, frames lost, disk free."""

    def __init__(self, duration_s: float, disable: bool) -> None:
        self.bar = tqdm(
            total=round(duration_s, 3),
            unit="s",
            desc="recording",
            disable=disable,
            file=sys.stderr,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s "
            "[{elapsed}<{remaining}{postfix}]",
        )

    def __call__(self, status: AcquisitionStatus) -> None:
        self.bar.n = round(min(status.recorded_s, self.bar.total), 3)
        self.bar.set_postfix_str(
            f"{status.data_rate_bps / 1e6:.1f} MB/s, lost {status.frames_lost} frames, "
            f"disk free {status.disk_free_bytes / 1e9:.1f} GB"
            + (", WRITER BEHIND" if status.backpressure_warning else ""),
            refresh=True,
        )

    def close(self) -> None:
        self.bar.close()


def _record(config: LabConfig, args: argparse.Namespace, *, electroporate: bool) -> int:
    inst = config.instrument(args.instrument)
    if inst.driver != "cnea_board":
        raise ConfigError(
            f"instrument {args.instrument!r} uses driver {inst.driver!r}, not cnea_board",
            key=f"instruments.{args.instrument}.driver",
        )
    settings = parse_section(AcquisitionSettings, config, "acquisition")
    if args.codec:
        settings = dataclasses.replace(settings, codec=args.codec)
    codec_options(settings.codec)  # an unknown codec is refused before anything starts
    out_dir = Path(args.out) if args.out else new_session_dir(config.lab.data_dir)
    path = session_file_for_output(out_dir)
    board = open_instrument(config, args.instrument)
    try:
        extra: dict[str, Any] = {}
        if electroporate:
            board.electroporate(None, args.electroporate_v, args.electroporate_width)
            opened = int((board.access() > 0).sum())
            print(
                f"electroporated {board.n_channels} electrodes ({args.electroporate_v:g} V, "
                f"{args.electroporate_width * 1e3:g} ms): access on {opened}",
                file=sys.stderr,
            )
            extra["electroporation_before_recording"] = {
                "amplitude_v": args.electroporate_v,
                "width_s": args.electroporate_width,
                "channels_with_access": opened,
            }
        acq = Acquisition(
            board,
            path,
            duration_s=args.duration,
            settings=settings,
            extra_settings=extra,
            calibration=CneaCalibration(calibration_settings(config), args.instrument),
        )
        progress = _Progress(args.duration, disable=args.no_progress)
        try:
            status = acq.wait(poll=progress, raise_on_error=False)
        finally:
            progress.close()
    finally:
        board.close()
    print(
        f"{path}: {status.recorded_s:.2f} s of {acq.n_channels} channels at "
        f"{acq.sample_rate_hz:g} Hz; frames received {status.frames_received}, lost "
        f"{status.frames_lost}, gaps {status.gaps}; stop: {status.stop_reason}"
    )
    if acq.error is not None:
        print(f"error: {type(acq.error).__name__}: {acq.error}", file=sys.stderr)
        return 1
    return 0
