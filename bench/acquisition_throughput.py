"""Acquisition throughput: how fast the CNEA data path runs, as multiples of real time.

    .venv/bin/python bench/acquisition_throughput.py [--quick] [--plot PNG]

Real time = 4096 channels x 10 kHz x int16 = 81.9 MB/s. In one run, side by side:

1. Emulator speed (one core, no wire): culture alone, culture + board (quantise, frame,
   CRC), and board over a playback file; data seconds per wall second and per CPU second.
2. End to end: the board emulator in its own process plays a recorded culture file
   (``PlaybackSource``, preloaded) paced at a rate; this process runs the driver and the
   acquisition into HDF5. Rates are raised until frames are lost or the writer falls
   behind.
3. Bare loop: the same emulator unpaced, and a loop that only receives the bytes and
   writes them to a file (no parsing, no CRC, no HDF5) — the wire's and disk's ceiling.

Then the highest clean rate and the bare loop are repeated, interleaved; if a repeat loses
frames the next lower clean rate is repeated instead. The sustained rate is the highest
whose repeats are all clean; medians are quoted, with the acquisition's CPU seconds per
second of data.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drivers.cnea_board import CneaBoard  # noqa: E402
from hil_sim import cnea_frames  # noqa: E402
from hil_sim.cnea_board import CneaBoardDevice, CneaBoardEmulator, make_source  # noqa: E402
from hil_sim.playback import PlaybackSource  # noqa: E402
from instrument.acquisition import Acquisition, AcquisitionSettings  # noqa: E402
from instrument.storage import DEFAULT_CODEC, RecordingInfo, SessionWriter  # noqa: E402

RATE_HZ = 10_000.0
CHANNELS = 4096
REAL_TIME_BPS = RATE_HZ * CHANNELS * 2


# --- 1. emulator speed --------------------------------------------------------------------
def _timed_frames(device: CneaBoardDevice, seconds: float) -> tuple[float, float]:
    """Produce and encode ``seconds`` of frames; (data s per wall s, data s per CPU s)."""
    device.handle(":ACQ:STAR")
    n = 0
    target = int(seconds * RATE_HZ)
    wall, cpu = time.perf_counter(), time.process_time()
    while n < target:
        sequence, first, codes, flags = device.produce_frame()
        cnea_frames.encode(sequence, first, codes, flags)
        n += codes.shape[0]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    device.handle(":ACQ:STOP")
    return n / RATE_HZ / wall, n / RATE_HZ / cpu


def make_playback_file(path: Path, seconds: float, seed: int) -> dict[str, tuple[float, float]]:
    """Record ``seconds`` of the electroporated culture into ``path`` (no wire), timing the
    emulator as it goes. Returns {row: (RT wall, RT cpu)}."""
    source = make_source({}, seed)
    device = CneaBoardDevice(source, seed=seed)
    device.handle(":ELEC:AMPL 2.5;:ELEC:WIDT 1e-3;:ELEC")
    results: dict[str, tuple[float, float]] = {}
    # culture alone
    n = int(min(seconds, 1.0) * RATE_HZ)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n // 160):
        source.read(160)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    results["culture alone (electrodes.read)"] = (n / RATE_HZ / wall, n / RATE_HZ / cpu)
    # culture + board, written to the playback file as it goes
    gain, offset = device.front_end.nominal_gain(), device.front_end.nominal_offset()
    info = RecordingInfo(
        sample_rate_hz=RATE_HZ,
        n_channels=CHANNELS,
        gain_v=gain,
        offset_v=offset,
        positions_m=source.positions_m,
        instrument_identity=",".join(device.identity),
    )
    writer = SessionWriter(path, info, reserve_bytes=0)
    device.handle(":ACQ:STAR")
    block = np.empty((1024, CHANNELS), dtype=np.int16)
    fill = row = 0
    busy_wall = busy_cpu = 0.0
    target = int(seconds * RATE_HZ) // 1024 * 1024
    while row + fill < target:
        w, c = time.perf_counter(), time.process_time()
        sequence, first, codes, flags = device.produce_frame()
        cnea_frames.encode(sequence, first, codes, flags)
        busy_wall += time.perf_counter() - w
        busy_cpu += time.process_time() - c
        block[fill : fill + len(codes)] = codes
        fill += len(codes)
        if fill == 1024:
            writer.write(row, block)
            row, fill = row + 1024, 0
    writer.close(stop_reason="benchmark playback file")
    results["culture + board (frames, CRC)"] = (row / RATE_HZ / busy_wall, row / RATE_HZ / busy_cpu)
    playback = CneaBoardDevice(PlaybackSource(path, preload=True), seed=seed)
    results["board over playback (preloaded)"] = _timed_frames(playback, seconds)
    return results


# --- codecs ---------------------------------------------------------------------------------
CODECS = ("none", "blosc-lz4-bitshuffle", "blosc-lz4-shuffle", "blosc2-lz4-bitshuffle", "zstd")


def codec_table(playback: Path, workdir: Path, seconds: float) -> dict[str, tuple[float, float]]:
    """Write ``seconds`` of the playback data with each codec: {codec: (x real time per CPU
    second, compression ratio)}."""
    src = PlaybackSource(playback, preload=True)
    data = src.read_codes(int(seconds * RATE_HZ) // 1024 * 1024)
    src.close()
    info = RecordingInfo(
        sample_rate_hz=RATE_HZ,
        n_channels=CHANNELS,
        gain_v=np.full(CHANNELS, 5e-6),
        offset_v=np.zeros(CHANNELS),
        positions_m=np.zeros((CHANNELS, 2)),
    )
    out: dict[str, tuple[float, float]] = {}
    for codec in CODECS:
        path = workdir / f"codec-{codec}.h5"
        writer = SessionWriter(path, info, codec=codec, reserve_bytes=0)
        cpu = time.process_time()
        for row in range(0, len(data), 1024):
            writer.write(row, data[row : row + 1024])
        writer.flush()
        cpu = time.process_time() - cpu
        writer.close(stop_reason="benchmark")
        out[codec] = (len(data) / RATE_HZ / cpu, data.nbytes / path.stat().st_size)
        path.unlink()
    return out


# --- 2./3. the emulator in its own process -------------------------------------------------
def _serve(path: str, conn: mp.connection.Connection) -> None:
    """Child process: the board emulator playing ``path``; reports its ports, runs until told."""
    emulator = CneaBoardEmulator(PlaybackSource(path, preload=True), rate=math.inf, name="bench")
    conn.send((emulator.resource, emulator.data_port))
    conn.recv()
    emulator.stop()


class EmulatorProcess:
    def __init__(self, path: Path) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(str(path), child), daemon=True)
        self.proc.start()
        self.resource, self.data_port = self.conn.recv()
        self.ps = psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send("stop")
        self.proc.join(10)


def _own_cpu() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def run_acquisition(
    emu: EmulatorProcess, rate: float, seconds: float, workdir: Path, codec: str
) -> dict[str, float]:
    """One end-to-end recording of ``seconds`` of data at ``rate`` x real time."""
    board = CneaBoard.open(emu.resource, timeout_s=5.0, data_port=emu.data_port)
    path = Path(tempfile.mkdtemp(dir=workdir)) / "session.h5"
    try:
        board.set_emulation_rate(rate)
        acq = Acquisition(
            board,
            path,
            duration_s=seconds,
            settings=AcquisitionSettings(codec=codec, reserve_bytes=0),
            with_truth=False,
        )
        cpu0, ecpu0 = _own_cpu(), emu.cpu()
        acq.start()
        wall0 = time.perf_counter()
        status = acq.wait(raise_on_error=False)
        wall = time.perf_counter() - wall0
        cpu, ecpu = _own_cpu() - cpu0, emu.cpu() - ecpu0
        size = path.stat().st_size
    finally:
        board.close()
        with contextlib.suppress(OSError):
            path.unlink()
    ok = acq.error is None and status.frames_lost == 0 and status.recorded_s >= seconds - 1e-6
    return {
        "ok": float(ok),
        "rt": status.recorded_s / wall,
        "lost": float(status.frames_lost),
        "cpu_per_s": cpu / max(status.recorded_s, 1e-9),
        "emu_cpu_per_s": ecpu / max(status.recorded_s, 1e-9),
        "ratio": status.recorded_s * REAL_TIME_BPS / max(size, 1),
        "reason": status.stop_reason,  # type: ignore[dict-item]
    }


def run_bare(emu: EmulatorProcess, seconds: float, workdir: Path) -> dict[str, float]:
    """Receive ``seconds`` of frames unpaced and write the raw bytes to a file."""
    board = CneaBoard.open(emu.resource, timeout_s=5.0, data_port=emu.data_port)
    spf = board.samples_per_frame
    frame = cnea_frames.frame_bytes(CHANNELS, spf)
    target = math.ceil(seconds * RATE_HZ / spf) * frame
    out = workdir / "bare.bin"
    try:
        board.set_emulation_rate(math.inf)
        sock = socket.create_connection(("127.0.0.1", emu.data_port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        buf = bytearray(8 << 20)
        view = memoryview(buf)
        received = 0
        cpu0, ecpu0 = _own_cpu(), emu.cpu()
        board.start()
        wall0 = time.perf_counter()
        with open(out, "wb", buffering=0) as f:
            while received < target:
                n = sock.recv_into(view)
                if n == 0:
                    raise ConnectionError("emulator closed the data connection")
                f.write(view[:n])
                received += n
        wall = time.perf_counter() - wall0
        cpu, ecpu = _own_cpu() - cpu0, emu.cpu() - ecpu0
        board.stop()
        sock.close()
    finally:
        board.close()
        with contextlib.suppress(OSError):
            out.unlink()
    data_s = received / frame * spf / RATE_HZ
    return {"rt": data_s / wall, "cpu_per_s": cpu / data_s, "emu_cpu_per_s": ecpu / data_s}


def _filesystem(path: Path) -> str:
    """The filesystem type and device holding ``path`` (from /proc/mounts)."""
    best = ("?", "?", "")
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            device, mount, kind = line.split()[:3]
            if str(path.resolve()).startswith(mount) and len(mount) >= len(best[2]):
                best = (kind, device, mount)
    return f"{best[0]} on {best[1]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (about a minute)")
    parser.add_argument("--codec", default=DEFAULT_CODEC)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--plot", metavar="PNG", help="also draw the rates as a bar chart")
    parser.add_argument(
        "--dir",
        help="where the recordings go (default: the system temp folder; /dev/shm takes the "
        "disk out of the measurement)",
    )
    args = parser.parse_args()
    playback_s = 2.0 if args.quick else 5.0
    run_s = 6.0 if args.quick else 15.0
    repeats = 3
    rates = [2.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0]

    load0 = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load0:.1f} at the start")
    with tempfile.TemporaryDirectory(prefix="bench-acq-", dir=args.dir) as tmp:
        workdir = Path(tmp)
        print(f"recordings go to {workdir} ({_filesystem(workdir)})")
        playback = workdir / "playback.h5"
        print(
            f"recording {playback_s:g} s of the electroporated culture for playback ...", flush=True
        )
        emu_rates = make_playback_file(playback, playback_s, args.seed)
        print("\nEmulator speed, 4096 channels x 10 kHz (multiples of real time, one core):")
        print(f"  {'':36s} {'per wall s':>10s} {'per CPU s':>10s}")
        for name, (wall, cpu) in emu_rates.items():
            print(f"  {name:36s} {wall:9.2f}x {cpu:9.2f}x")

        codecs = codec_table(playback, workdir, min(playback_s, 2.0))
        print("\nCompression of the culture's codes (HDF5 chunks 1024 x 64, one thread):")
        print(f"  {'codec':24s} {'x real time per CPU s':>22s} {'smaller by':>11s}")
        for name, (speed, ratio) in codecs.items():
            mark = "  <- default" if name == DEFAULT_CODEC else ""
            print(f"  {name:24s} {speed:21.1f}x {ratio:10.2f}x{mark}")

        emu = EmulatorProcess(playback)
        try:
            run_acquisition(emu, 2.0, 1.0, workdir, args.codec)  # warm-up, not reported
            print(f"\nRamp: end-to-end at paced rates, {run_s:g} s of data each ({args.codec}):")
            clean_rates: list[float] = []
            for rate in rates:
                for attempt in (1, 2):  # a failure gets one retry: the machine is shared
                    r = run_acquisition(emu, rate, run_s, workdir, args.codec)
                    verdict = "clean" if r["ok"] else f"FAILED ({r['reason']}, lost {r['lost']:g})"
                    print(
                        f"  paced {rate:5.1f}x -> achieved {r['rt']:5.2f}x, {verdict}"
                        + (" (retry)" if attempt == 2 else ""),
                        flush=True,
                    )
                    if r["ok"]:
                        break
                if not r["ok"]:
                    break
                clean_rates.append(rate)
            if not clean_rates:
                print("  no clean rate found")
                return 1
            # the sustained rate: the highest clean ramp rate whose repeats all stay clean
            # (one short clean run can be luck on a shared machine: step down until it holds)
            for sustained in reversed(clean_rates):
                print(f"\nRepeats ({repeats}, interleaved): {sustained:g}x vs the bare loop")
                e2e, bare = [], []
                for _ in range(repeats):
                    bare.append(run_bare(emu, run_s, workdir))
                    e2e.append(run_acquisition(emu, sustained, run_s, workdir, args.codec))
                if all(r["ok"] for r in e2e):
                    break
                print(f"  losses at {sustained:g}x in a repeat: the next lower clean rate")
        finally:
            emu.close()

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    clean = all(r["ok"] for r in e2e)
    achieved = med(e2e, "rt")
    print(f"\n  {'path':44s} {'x real time':>11s} {'CPU s/s':>8s} {'emu CPU s/s':>11s}")
    print(
        f"  {'board playback -> driver -> HDF5 (paced)':44s} {med(e2e, 'rt'):10.2f}x "
        f"{med(e2e, 'cpu_per_s'):8.3f} {med(e2e, 'emu_cpu_per_s'):11.3f}"
    )
    print(
        f"  {'board playback -> recv -> raw file (unpaced)':44s} {med(bare, 'rt'):10.2f}x "
        f"{med(bare, 'cpu_per_s'):8.3f} {med(bare, 'emu_cpu_per_s'):11.3f}"
    )
    losses = "zero frames lost in every repeat" if clean else "LOSSES in a repeat"
    print(
        f"\n  sustained end-to-end rate: {achieved:.2f}x real time (median, paced at "
        f"{sustained:g}x; {losses}); target 5x: {'met' if achieved >= 5 and clean else 'NOT met'}"
    )
    print(f"  end-to-end / bare loop: {med(e2e, 'rt') / med(bare, 'rt'):.2f}")
    print(f"  compression ({args.codec}): {med(e2e, 'ratio'):.2f}x smaller than raw")
    print("  CPU s/s = CPU seconds of the process per second of data (1.0 = one core at 1x)")
    print(
        f"  load-independent capacity: acquisition {1 / med(e2e, 'cpu_per_s'):.1f}x and emulator "
        f"{1 / med(e2e, 'emu_cpu_per_s'):.1f}x real time per CPU core; load average "
        f"{load0:.1f} -> {os.getloadavg()[0]:.1f} during the run"
    )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [*emu_rates, "end-to-end (sustained)", "bare recv+write"]
        values = [w for w, _ in emu_rates.values()] + [med(e2e, "rt"), med(bare, "rt")]
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.barh(names, values, color=["#888"] * len(emu_rates) + ["#1f77b4", "#ff7f0e"])
        ax.axvline(1.0, color="k", lw=0.8)
        ax.axvline(5.0, color="r", lw=0.8, ls="--", label="5x target")
        ax.set_xlabel("multiple of real time (4096 ch x 10 kHz)")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"  plot: {args.plot}")
    return 0 if clean and achieved >= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
