"""Golden transcripts of the SMU and selector drivers: (bytes sent, reply) pairs.

The driver tests check the drivers send exactly these; the emulator tests replay
the same messages into the emulators and check every reply has the same shape —
so driver and emulator both follow the manuals' command forms, not each other.
"""

from __future__ import annotations

from drivers.limits import SafetyLimits

OK = '0,"No error"'

LIMITS = SafetyLimits(
    max_voltage_v=3.0,
    compliance_a=1e-3,
    pulse_width_min_s=1e-6,
    pulse_width_max_s=1e-3,
    read_voltage_v=0.2,
)

K2450_CONFIGURE = [
    ("*RST", None),
    (":SOUR:FUNC VOLT", None),
    (":SOUR:VOLT:RANG:AUTO ON", None),
    (":SOUR:VOLT:ILIM 0.001", None),
    (':SENS:FUNC "CURR"', None),
    (":SENS:CURR:RANG:AUTO ON", None),
    (":SENS:CURR:NPLC 0.01", None),
    (":SOUR:VOLT 0", None),
    (':SOUR:CONF:LIST:CRE "BPZERO"', None),
    (':SOUR:CONF:LIST:STOR "BPZERO"', None),
    (":SOUR:VOLT 0.2", None),
    (':SOUR:CONF:LIST:CRE "BPREAD"', None),
    (':SOUR:CONF:LIST:STOR "BPREAD"', None),
    (":DIG:LINE1:MODE TRIG, OUT", None),
    (":TRIG:DIG1:OUT:STIM NOTIFY1", None),
    (":DIG:LINE2:MODE TRIG, IN", None),
    (":TRIG:DIG2:IN:EDGE FALL", None),
    (":SYST:ERR?", OK),
    (":SYST:LFR?", "50"),
]

K2450_FIRST_READ = [
    (":OUTP ON", None),
    (":SYST:ERR?", OK),
    (':READ? "defbuffer1", READ, SOURSTAT', "+2.000000E-06,0"),
]

K2450_NEXT_READ = [(':READ? "defbuffer1", READ, SOURSTAT', "+1.000000E-03,32")]

K2450_TRAIN = [
    (":SOUR:LIST:VOLT 1,1.1,1.2", None),
    (':TRIG:LOAD "Empty"', None),
    (':TRIG:BLOC:BUFF:CLE 1, "defbuffer1"', None),
    (':TRIG:BLOC:CONF:REC 2, "BPZERO", 1', None),
    (":TRIG:BLOC:SOUR:STAT 3, ON", None),
    (":TRIG:BLOC:WAIT 4, DIGIO2", None),
    (':TRIG:BLOC:CONF:NEXT 5, "VoltCustomSweepList"', None),
    (":TRIG:BLOC:DEL:CONS 6, 1e-05", None),
    (':TRIG:BLOC:CONF:REC 7, "BPREAD", 1', None),
    (':TRIG:BLOC:MEAS 8, "defbuffer1"', None),
    (':TRIG:BLOC:CONF:REC 9, "BPZERO", 1', None),
    (":TRIG:BLOC:NOT 10, 1", None),
    (":TRIG:BLOC:BRAN:COUN 11, 3, 4", None),
    (":TRIG:BLOC:SOUR:STAT 12, OFF", None),
    (":INIT", None),
    (":TRIG:STAT?", "RUNNING;RUNNING;8"),
    (":TRIG:STAT?", "IDLE;IDLE;12"),
    (
        ':TRAC:DATA? 1, 3, "defbuffer1", READ, SOURSTAT',
        "+1.000000E-05,0,+2.000000E-05,32,+3.000000E-05,0",
    ),
    (":SYST:ERR?", OK),
]

K2450_SECOND_TRAIN = [  # same structure: only the list and the changed block are re-sent
    (":SOUR:LIST:VOLT -1,-1.5", None),
    (":TRIG:BLOC:BRAN:COUN 11, 2, 4", None),
    (":INIT", None),
    (":TRIG:STAT?", "IDLE;IDLE;12"),
    (':TRAC:DATA? 1, 2, "defbuffer1", READ, SOURSTAT', "+1.000000E-05,0,+2.000000E-05,0"),
    (":SYST:ERR?", OK),
]

K2450_READ_TRAIN = [
    (':TRIG:LOAD "Empty"', None),
    (':TRIG:BLOC:BUFF:CLE 1, "defbuffer1"', None),
    (':TRIG:BLOC:CONF:REC 2, "BPREAD", 1', None),
    (":TRIG:BLOC:SOUR:STAT 3, ON", None),
    (":TRIG:BLOC:WAIT 4, DIGIO2", None),
    (':TRIG:BLOC:MEAS 5, "defbuffer1"', None),
    (":TRIG:BLOC:NOT 6, 1", None),
    (":TRIG:BLOC:BRAN:COUN 7, 2, 4", None),
    (":TRIG:BLOC:SOUR:STAT 8, OFF", None),
    (":INIT", None),
    (":TRIG:STAT?", "IDLE;IDLE;8"),
    (':TRAC:DATA? 1, 2, "defbuffer1", READ, SOURSTAT', "+1.000000E-05,0,+2.000000E-05,0"),
    (":SYST:ERR?", OK),
]

B2900_CONFIGURE = [
    ("*RST", None),
    (":SOUR:FUNC:MODE VOLT", None),
    (':SENS:FUNC "CURR"', None),
    (":SENS:CURR:PROT 0.001", None),
    (":SENS:CURR:RANG:AUTO ON", None),
    (":SENS:CURR:NPLC 0.01", None),
    (":SOUR:VOLT 0", None),
    (":SOUR:DIG:EXT1:FUNC TOUT", None),
    (":SOUR:DIG:EXT2:FUNC TINP", None),
    (":SYST:ERR?", OK),
    (":SYST:LFR?", "50"),
]

B2900_READ = [
    (":SOUR:FUNC:SHAP DC", None),
    (":SOUR:VOLT:MODE FIX", None),
    (":SOUR:VOLT 0.2", None),
    (":OUTP ON", None),
    (":SYST:ERR?", OK),
    (":MEAS:CURR? (@1)", "+2.000000E-06"),
    (":SENS:CURR:PROT:TRIP?", "0"),
]

B2900_TRAIN = [
    (":SOUR:FUNC:SHAP PULS", None),
    (":SOUR:VOLT 0", None),
    (":SOUR:VOLT:MODE LIST", None),
    (":SOUR:LIST:VOLT 1,0.2,1.1,0.2", None),
    (":SOUR:PULS:DEL 0", None),
    (":SOUR:PULS:WIDT 0.0005", None),
    (":TRIG:ACQ:DEL 0.0003", None),
    (":TRIG:ALL:SOUR EXT2", None),
    (":TRIG:ALL:COUN 4", None),
    (":TRIG:ACQ:TOUT ON", None),
    (":TRIG:ACQ:TOUT:SIGN EXT1", None),
    (":OUTP ON", None),
    (":INIT (@1)", None),
    (":STAT:OPER:COND?", "18"),
    (":STAT:OPER:COND?", "9"),
    (
        ":FETC:ARR:CURR? (@1)",
        "+1.000000E-04,+2.000000E-05,+1.100000E-04,+3.000000E-05",
    ),
    (":FETC:ARR:STAT? (@1)", "0,0,0,2"),
    (":SYST:ERR?", OK),
    (":OUTP OFF", None),
]

SELECTOR_SESSION = [
    (":ROUT:SIZE?", "8,8"),
    (":ROUT:OPEN:ALL", "OK"),
    (":ROUT:BIAS HALF", "OK"),
    (":ROUT:CELL 1,2", "OK"),
    (":ROUT:STAT?", "CELL,1,2"),
    (":ROUT:ROW 7", "OK"),
    (":ROUT:REF 3", "OK"),
    (":ROUT:REF:CAT?", "1000,10000,100000,1000000"),
    (":ROUT:SCAN:CLE", "OK"),
    (":ROUT:SCAN:ADD 0,0,7,7", "OK"),
    (":ROUT:SCAN:TCO 2", "OK"),
    (":ROUT:SCAN:ARM", "OK"),
    (":ROUT:SCAN:STAT?", "ARMED,0,2"),
    (":ROUT:SCAN:ABOR", "OK"),
    (":ROUT:BIAS?", "HALF"),
]

K2450_LIST_SWEEP = [
    (":SOUR:LIST:VOLT -0.5,0,0.5", None),
    (':SOUR:SWE:VOLT:LIST 1, 0.001, 1, OFF, "defbuffer1"', None),
    (":INIT", None),
    (":TRIG:STAT?", "IDLE;IDLE;9"),
    (
        ':TRAC:DATA? 1, 3, "defbuffer1", READ, SOUR, SOURSTAT',
        "-5.000000E-05,-5.000000E-01,0,+0.000000E+00,+0.000000E+00,0,"
        "+1.000000E-03,+5.000000E-01,32",
    ),
    (":SYST:ERR?", OK),
    (":OUTP OFF", None),
    (":SYST:ERR?", OK),
]
