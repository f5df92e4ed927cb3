"""A real full disk: a small tmpfs in a private mount namespace (needs ``unshare`` and the
right to mount; skipped where the machine does not allow it). The recording stops with
DiskFullError and another process reads everything written before."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

RECORD = textwrap.dedent(
    """
    import json, sys
    from drivers.cnea_board import CneaBoard
    from hil_sim.cnea_board import CneaBoardEmulator
    from instrument.acquisition import Acquisition, AcquisitionSettings
    from instrument.storage import DiskFullError
    from tests.cnea_source import SineSource

    path, proactive = sys.argv[1], sys.argv[2] == "proactive"
    settings = AcquisitionSettings(
        ring_s=10.0, codec="none", reserve_bytes=24 << 20, min_free_bytes=None if proactive else 0
    )
    with CneaBoardEmulator(SineSource(64), keep_samples=True, rate=20.0) as emu:
        board = CneaBoard.open(emu.resource, data_port=emu.data_port)
        acq = Acquisition(board, path, settings=settings)
        try:
            acq.wait()
            error = ""
        except DiskFullError as exc:
            error = type(exc).__name__
        board.close()
        first, codes = emu.device.tapped_codes()
    import numpy as np
    np.save(sys.argv[3], codes)
    print(json.dumps({"error": error, "reason": acq.stop_reason}))
    """
)

READ = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from instrument.recording import open_hdf5_recording
    codes = np.load(sys.argv[2])
    with open_hdf5_recording(sys.argv[1]) as rec:
        n = rec.n_samples
        same = bool(np.array_equal(rec.traces[()], codes[:n]))
        print(json.dumps({"n": n, "same": same, "complete": bool(rec.attrs["complete"]),
                          "reason": str(rec.attrs["stop_reason"])}))
    """
)


def _namespace_prefix() -> list[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare not available")
    prefix = [unshare, "--mount"] if os.geteuid() == 0 else [unshare, "--map-root-user", "--mount"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a mount namespace here: {probe.stderr.decode().strip()}")
    return prefix


@pytest.mark.parametrize("mode", ["proactive", "reactive"])
def test_real_full_disk(mode, tmp_path):
    prefix = _namespace_prefix()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (tmp_path / "record.py").write_text(RECORD)
    (tmp_path / "read.py").write_text(READ)
    session = mnt / "session.h5"
    codes = tmp_path / "codes.npy"
    script = (
        f"mount -t tmpfs -o size=48m tmpfs {mnt} || exit 77; "
        f"{sys.executable} {tmp_path / 'record.py'} {session} {mode} {codes} || exit 1; "
        f"{sys.executable} {tmp_path / 'read.py'} {session} {codes}"
    )
    proc = subprocess.run(
        [*prefix, "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode == 77:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recorded, read = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert recorded == {"error": "DiskFullError", "reason": "disk full"}
    assert read["reason"] == "disk full" and read["same"] and read["n"] > 10_000
    assert read["complete"] is (mode == "proactive")
