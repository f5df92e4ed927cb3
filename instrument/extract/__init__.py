"""Connectivity extraction ("copy"): from an intracellular recording to a synaptic map.

The stages, one module each: :mod:`~instrument.extract.volts` (calibration seam),
:mod:`~instrument.extract.spikes` (detection, spike removal, decimation),
:mod:`~instrument.extract.units` (electrodes merged into neurons),
:mod:`~instrument.extract.averaging` (all-pairs spike-triggered sums),
:mod:`~instrument.extract.psp` (significance against jittered surrogates, classes),
:mod:`~instrument.extract.score` (against ground truth),
:mod:`~instrument.extract.store` (session file, CSV, GraphML),
:mod:`~instrument.extract.pipeline` (the whole run) and
:mod:`~instrument.extract.distributed` (the same run on Dask). Method: docs/extraction.md.
"""
