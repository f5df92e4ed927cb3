"""The ``emulated_lab`` fixture that brainpaste's pytest plugin gives any test suite."""

from __future__ import annotations

import textwrap

pytest_plugins = ["pytester"]

USER_TESTS = textwrap.dedent(
    """
    import pyvisa
    import pytest

    def test_identify_every_instrument(emulated_lab):
        rm = pyvisa.ResourceManager("@py")
        smu = rm.open_resource(emulated_lab.resources["smu"], read_termination="\\n",
                               write_termination="\\n", timeout=3000)
        assert "2450" in smu.query("*IDN?")
        smu.close()
        assert emulated_lab.data_ports["cnea"] > 0
        assert "[instruments.smu]" in emulated_lab.lab_toml.read_text()

    @pytest.mark.emulated_lab_options(seed=7, latency_s=0.01)
    def test_options_reach_the_lab(emulated_lab):
        assert emulated_lab.lab.settings.seed == 7
        assert emulated_lab.faults("smu").latency_s == 0.01

    def test_faults_are_reachable(emulated_lab):
        emulated_lab.faults("smu").garbage_next()
        rm = pyvisa.ResourceManager("@py")
        smu = rm.open_resource(emulated_lab.resources["smu"], read_termination="\\n",
                               write_termination="\\n", timeout=3000)
        smu.write("*IDN?")
        assert b"GARBAGE" in smu.read_raw()
        smu.close()
    """
)


def test_plugin_gives_a_user_suite_a_running_lab(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3)


def test_lab_is_stopped_after_each_test(pytester):
    pytester.makepyfile(
        test_user="""
        import socket, pytest
        PORTS = []
        def test_a(emulated_lab):
            PORTS.append(emulated_lab.data_ports["cnea"])
        def test_b():
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", PORTS[0]), timeout=1)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=2)
