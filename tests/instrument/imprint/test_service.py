"""Fitting a map to the rigs there are (the session imprints what its tiles hold)."""

from __future__ import annotations

import numpy as np
import pytest

from instrument.imprint.connectivity import ConnectivityMap
from instrument.imprint.run import make_plan, mapping_for
from instrument.imprint.service import densest_first, fit_to_tiles, submap
from tests.instrument.imprint.helpers import config_with, synthetic_map

SMALL = "[crossbar]\nrows = 16\ncols = 16\n"


def test_a_map_that_fits_is_kept_whole():
    config = config_with(SMALL)
    plan = make_plan(config, "rram")
    cmap = synthetic_map(n_units=6, n_synapses=12)
    sel = fit_to_tiles(config, plan, cmap, max_tiles=4)
    assert sel.complete and sel.cmap is cmap
    assert sel.tiles == len(mapping_for(config, plan, cmap).tiles)


def test_a_large_map_keeps_its_most_connected_units_within_the_tiles():
    config = config_with(SMALL)
    plan = make_plan(config, "rram")
    cmap = synthetic_map(n_units=60, n_synapses=400, seed=5)
    assert len(mapping_for(config, plan, cmap).tiles) > 2
    sel = fit_to_tiles(config, plan, cmap, max_tiles=2)
    assert not sel.complete
    assert 0 < sel.tiles <= 2
    assert len(mapping_for(config, plan, sel.cmap).tiles) == sel.tiles
    # the kept units are a prefix of the densest-first order
    order = cmap.units[densest_first(cmap)]
    assert set(sel.cmap.units.tolist()) == set(order[: sel.cmap.n_units].tolist())
    assert "most connected" in sel.describe()


def test_densest_first_takes_partners_before_stronger_strangers():
    # unit 10 is the strongest and is linked (weakly) to 11 only; 20..23 are a clique whose
    # members are each stronger than 11 — but 11 comes second: it is linked to what is chosen
    clique = [(a, b) for a in range(20, 24) for b in range(20, 24) if a != b]
    pre = [a for a, _ in clique] + [10, 10]
    post = [b for _, b in clique] + [11, 30]
    weight = [0.5e-3] * len(clique) + [0.2e-3, 4e-3]
    cmap = ConnectivityMap.from_arrays(pre, post, weight)
    order = cmap.units[densest_first(cmap)].tolist()
    assert order[:2] == [10, 30]
    assert order[2] == 11  # linked to the chosen set, though weaker than any clique member
    assert set(order[3:]) == {20, 21, 22, 23}


def test_submap_keeps_only_synapses_among_the_units():
    cmap = ConnectivityMap.from_arrays([1, 2, 3], [2, 3, 1], [1e-3, -1e-3, 2e-3])
    sub = submap(cmap, np.array([1, 2]))
    assert sub.pre.tolist() == [1] and sub.post.tolist() == [2]
    with pytest.raises(ValueError):
        fit_to_tiles(config_with(SMALL), make_plan(config_with(SMALL), "rram"), cmap, 0)
