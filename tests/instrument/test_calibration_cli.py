"""``brainpaste calibrate`` on the embedded lab: records filed and written with their report and
plots, before/after figures against the emulator's truth; then ``brainpaste record`` applies
the board's record and the session file says so."""

from __future__ import annotations

from pathlib import Path

import h5py
import pytest

from calibration.store import load_record
from instrument.calibration_use import read_entries
from instrument.cli import main


def lab_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "lab.toml"
    path.write_text(
        f'[calibration]\nstore = "{tmp_path / "store"}"\n[crossbar]\nrows = 10\ncols = 10\n' + extra
    )
    return path


@pytest.mark.slow
def test_calibrate_smu_then_crossbar(tmp_path, capsys):
    config = lab_file(tmp_path)
    out = tmp_path / "out"
    assert main(["calibrate", "smu", "--sim", "--config", str(config), "--out", str(out),
                 "--operator", "ada", "--no-progress"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "conductance gain" in text and "closer" in text and "filed in" in text
    (smu_dir,) = out.iterdir()
    record = load_record(smu_dir / "record.h5")
    assert record.kind == "smu" and record.operator == "ada"
    assert (smu_dir / "report.txt").read_text().startswith(f"record {record.record_id}")
    assert (smu_dir / "smu_references.png").stat().st_size > 1000
    assert (smu_dir / "smu_before_after.png").exists() and (smu_dir / "record.json").exists()
    filed = list((tmp_path / "store" / "smu").rglob("*.h5"))
    assert len(filed) == 1
    # the crossbar uses the filed SMU record
    assert main(["calibrate", "crossbar", "--sim", "--config", str(config), "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert f"using SMU record {record.record_id}" in captured.err
    assert "stuck high" in captured.out and "crossbar reads vs the cells" in captured.out
    (xbar_dir,) = [p for p in out.iterdir() if p.name.startswith("crossbar")]
    xbar = load_record(xbar_dir / "record.h5")
    assert xbar.info["smu_record"] == record.record_id
    assert xbar.values["cell_status"].shape == (10, 10)
    assert (xbar_dir / "crossbar_cells.png").exists()


def test_calibrate_refuses_bad_arguments(tmp_path, capsys):
    assert main(["calibrate", "smu"]) == 2
    assert main(["calibrate", "smu", "--config", str(tmp_path / "none.toml")]) == 2
    config = lab_file(tmp_path)
    assert main(["calibrate", "smu", "--sim", "--config", str(config), "--rig", "5"]) == 2
    assert "rigs [0]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["calibrate", "dmm", "--sim"])


@pytest.mark.slow
def test_calibrate_cnea_then_record_applies_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default store, calibration_store/, is relative
    assert main(["calibrate", "cnea", "--sim", "--operator", "ada", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "broken amplifiers found: 4 of 4" in text
    assert "recorded volts vs the true input" in text
    (folder,) = (tmp_path / "calibration_store" / "reports").iterdir()
    record = load_record(folder / "record.h5")
    assert (folder / "cnea_maps.png").exists() and (folder / "cnea_before_after.png").exists()
    session = tmp_path / "session"
    assert main(["record", "--sim", "--duration", "0.2", "--out", str(session),
                 "--no-electroporate", "--no-progress", "--rate", "4"]) == 0  # fmt: skip
    entry = read_entries(session / "session.h5")["cnea"]
    assert entry["status"] == "applied" and entry["record_id"] == record.record_id
    with h5py.File(session / "session.h5") as f:
        bad = f["recording/bad_channels"][()]
        assert bad.sum() == record.values["bad_channels"].sum() >= 4
        cols = range(bad.size)
        gain = record.values["gain"][0, 0][cols]
        stored = f["recording/channel_gain_v"][()]
        assert (stored[~bad] == gain[~bad]).all()
