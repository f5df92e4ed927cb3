"""Imprint ("paste"): a connectivity map onto memory-crossbar conductances.

Modules, in the order a run uses them (docs/imprint.md):

* :mod:`~instrument.imprint.settings` — the ``[imprint]`` table and its per-technology
  algorithm parameters, checked against the technology's safety limits before any pulse;
* :mod:`~instrument.imprint.connectivity` — the map as arrays (and from the session file);
* :mod:`~instrument.imprint.mapping` — neuron ordering, weights to quantized conductance
  targets, differential pairs or E/I arrays, tiles of the rig's size;
* :mod:`~instrument.imprint.characterize` — read every cell, find stuck / out-of-window cells;
* :mod:`~instrument.imprint.placement` — place synapses away from bad cells, report the loss;
* :mod:`~instrument.imprint.write_verify` — one algorithm per technology, one batched loop;
* :mod:`~instrument.imprint.journal` — the per-cell journal in ``/imprint`` (resumable);
* :mod:`~instrument.imprint.physical` — physical imprinting with the recorded spikes;
* :mod:`~instrument.imprint.verify` — final read, error/yield, functional MVM check;
* :mod:`~instrument.imprint.run` — the whole run over tiles and rigs;
* :mod:`~instrument.imprint.report` — plots and the text report.
"""
