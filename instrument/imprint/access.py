"""How imprint pulses and reads a rig: the bias scheme of the unselected lines.

On a **1T1R** array only the selected cell conducts, so one pulse+read train does both
(the wires' bias hardly matters). On a **passive** array every cell conducts:

* a *read* must keep sneak currents out of the measured column: every unselected line
  grounded (``passive_read_bias = "ground"``), so the cells of the selected column see
  0 V and only the selected cell's current reaches the SMU's LO;
* a *pulse* must keep the half-selected cells below their switching threshold: rows at
  V/3 and columns at 2V/3 (``passive_pulse_bias = "v/3"``), so no unselected cell sees
  more than |V|/3 (V/2 leaves V/2, too close to some RRAM thresholds at the top amplitudes).

So on a passive array each write-verify round is a pulse-only train at the pulse bias and
a read train at the read bias — still batched (two trains instead of one).
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass

import numpy as np

from drivers.crossbar_rig import CrossbarRig
from drivers.errors import DataIntegrityError

log = logging.getLogger(__name__)

Cells = list[tuple[int, int]]
_BIAS: weakref.WeakKeyDictionary[CrossbarRig, str] = weakref.WeakKeyDictionary()
"""The bias each open rig's selector holds (set by us only while imprinting)."""
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Access:
    """Biases for reads and pulses; ``split`` when they differ (passive arrays)."""

    read_bias: str
    pulse_bias: str

    @property
    def split(self) -> bool:
        return self.read_bias != self.pulse_bias

    @classmethod
    def for_array(cls, architecture: str, bias: str, read_bias: str, pulse_bias: str) -> Access:
        """1T1R: the configured bias for both; passive: the imprint settings' two biases."""
        if architecture == "passive":
            return cls(read_bias, pulse_bias)
        return cls(bias, bias)

    def _bias(self, rig: CrossbarRig, scheme: str) -> None:
        """Set the selector's bias when it differs (asked once per rig, then remembered)."""
        with _LOCK:
            known = _BIAS.get(rig)
        if known is None:
            known = rig.selector.bias
        if known != scheme:
            rig.selector.bias = scheme
        with _LOCK:
            _BIAS[rig] = scheme

    def read_cells(self, rig: CrossbarRig, cells: Cells) -> np.ndarray:
        """Conductance of ``cells`` (one batched read train; sent again once when the rig
        could not read it back — a read changes no cell), S."""
        self._bias(rig, self.read_bias)
        try:
            return rig.read_cells(cells).conductance_s
        except DataIntegrityError as exc:
            log.warning("a read train of %d cells was lost (%s); reading again", len(cells), exc)
            return rig.read_cells(cells).conductance_s

    def read_array(self, rig: CrossbarRig) -> np.ndarray:
        """Conductance of the whole array, S (read again once if the train was lost)."""
        self._bias(rig, self.read_bias)
        try:
            return rig.read_array()
        except DataIntegrityError as exc:
            log.warning("a whole-array read was lost (%s); reading again", exc)
            return rig.read_array()

    def pulse_read(
        self, rig: CrossbarRig, cells: Cells, amplitudes_v: np.ndarray | list[float], width_s: float
    ) -> np.ndarray:
        """Pulse each cell then read it (one train, or a pulse and a read train); S."""
        if not self.split:
            self._bias(rig, self.pulse_bias)
            return rig.pulse_train(cells, list(amplitudes_v), width_s, read=True).conductance_s
        self._bias(rig, self.pulse_bias)
        rig.pulse_train(cells, list(amplitudes_v), width_s, read=False)
        return self.read_cells(rig, cells)

    def pulse(
        self, rig: CrossbarRig, cells: Cells, amplitudes_v: np.ndarray | list[float], width_s: float
    ) -> None:
        """Pulses only (no read)."""
        self._bias(rig, self.pulse_bias)
        rig.pulse_train(cells, list(amplitudes_v), width_s, read=False)
