"""Lab configuration: defaults load, and every bad key gets an error with key, file and line."""

from __future__ import annotations

import pytest

from instrument.config import ConfigError, load, loads


def test_defaults_load_with_limits_for_every_technology():
    config = load()
    assert set(config.technology) == {"rram", "pcm", "mram", "flash"}
    assert config.limits().max_voltage_v == 3.0  # rram is the default crossbar


def write(tmp_path, text):
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "key", "line", "message"),
    [
        (
            "[lab]\nname = 'x'\n\n[crossbar]\nrows = 4\ncolz = 5\n",
            "crossbar.colz",
            6,
            "unknown key",
        ),
        ("[crossbar]\nrows = 'many'\n", "crossbar.rows", 2, "must be an integer"),
        ("[crossbar]\ntechnology = 'dram'\n", "crossbar.technology", 2, "not one of"),
        ("[technology.rram]\ncompliance_a = -1\n", "technology.rram.compliance_a", 2, "> 0 A"),
        ("[technology.pcm]\nread_voltage_v = 9.0\n", "technology.pcm.read_voltage_v", 2, "(0,"),
        (
            "\n[instruments.smu]\nresource = 'TCPIP::h::1::SOCKET'\n",
            "instruments.smu.driver",
            2,
            "missing required key",
        ),
        ("speed = 3\n", "speed", 1, "unknown top-level key"),
        ("[crossbar\nrows = 1\n", "", 1, "not valid TOML"),
    ],
)
def test_errors_name_key_file_and_line(tmp_path, text, key, line, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    err = info.value
    assert (err.key, err.line) == (key, line)
    assert message in str(err)
    assert str(path) in str(err)


def test_file_overrides_defaults_key_by_key(tmp_path):
    path = write(tmp_path, "[technology.rram]\nmax_voltage_v = 2.5\n[crossbar]\nrows = 32\n")
    config = load(path)
    assert config.limits("rram").max_voltage_v == 2.5
    assert config.limits("rram").compliance_a == 1e-3  # kept from the defaults
    assert (config.crossbar.rows, config.crossbar.cols) == (32, 64)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "nope.toml")


def test_values_are_never_evaluated():
    config = loads(
        "[lab]\nname = \"__import__('os').system('false')\"\n"
        "[technology.rram]\nmax_voltage_v = 1\ncompliance_a = 1\n"
        "pulse_width_min_s = 1\npulse_width_max_s = 1\nread_voltage_v = 0.5\n"
        "g_min_s = 0\ng_max_s = 1\n"
    )
    assert config.lab.name.startswith("__import__")
