"""The same extraction on a Dask cluster: workers read chunks of the recording file.

``extract_distributed(path, params, address="local")`` starts a
:class:`dask.distributed.LocalCluster` (``address`` a scheduler such as
``tcp://host:8786`` connects to a running cluster instead; its workers must see ``path``).

1. One task per chunk opens the file on its worker and runs the raw pass
   (:class:`~instrument.extract.spikes.RawPass`); the decimated traces stay on the
   workers, only spikes and channel statistics come back.
2. Units, triggers and gains are computed here (:func:`~instrument.extract.pipeline.prepare`).
3. One task per group of post units gathers those units' traces from the chunk results
   and runs :func:`~instrument.extract.pipeline.analyse_group`.
4. :func:`~instrument.extract.pipeline.assemble` makes the map.

The pieces are the ones :func:`~instrument.extract.pipeline.extract` runs in one process,
on the same chunks, with the same seeds, and no result depends on how post units are
grouped: the two give identical maps.
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from instrument.extract.params import ExtractionParams, params_from_json
from instrument.extract.pipeline import (
    ExtractionResult,
    GroupInput,
    GroupResult,
    analyse_group,
    assemble,
    group_inputs,
    group_size,
    prepare,
    summarize,
)
from instrument.extract.spikes import ChunkResult, RawPass, plan_chunks
from instrument.extract.volts import channel_calibration
from instrument.recording import open_recording

_OPEN: dict[tuple[str, str], Any] = {}
"""Per worker process: (path, parameters) → (recording, raw pass), opened once."""


def _raw_pass(path: str, params_json: str) -> RawPass:
    key = (path, params_json)
    if key not in _OPEN:
        params = params_from_json(params_json)
        rec = open_recording(path)
        _OPEN[key] = RawPass(rec, channel_calibration(rec), params, plan_chunks(rec, params))
    return _OPEN[key]


def chunk_task(path: str, params_json: str, index: int) -> ChunkResult:
    """Worker: the raw pass over chunk ``index`` of the file at ``path``."""
    return _raw_pass(path, params_json).run(index)


def strip_task(result: ChunkResult) -> ChunkResult:
    """Worker: the chunk result without its decimated traces (what the client needs)."""
    return ChunkResult(
        index=result.index,
        start=result.start,
        stop=result.stop,
        spike_channel=result.spike_channel,
        spike_sample=result.spike_sample,
        spike_height_v=result.spike_height_v,
        decimated_v=np.zeros((0, 0), dtype=np.float32),
        rail_samples=result.rail_samples,
        rise_sd_v=result.rise_sd_v,
        waveform_sum_v=result.waveform_sum_v,
    )


def rows_task(result: ChunkResult, channels: np.ndarray) -> np.ndarray:
    """Worker: these channels' decimated traces in one chunk."""
    return result.decimated_v[channels]


def group_task(inp: GroupInput, *pieces: np.ndarray) -> GroupResult:
    """Worker: a group of post units, from its traces chunk by chunk (in chunk order)."""
    return analyse_group(np.concatenate(pieces, axis=1), inp)


def extract_distributed(
    path: Path | str,
    params: ExtractionParams,
    *,
    address: str = "local",
    n_workers: int = 2,
    progress: bool = True,
    client: Any = None,
) -> ExtractionResult:
    """Run the extraction of the recording file at ``path`` on Dask (see the module doc)."""
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

    path = str(Path(path).resolve())
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with ExitStack() as stack:
        if client is None:
            if address == "local":
                cluster = stack.enter_context(
                    LocalCluster(
                        n_workers=n_workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                    )
                )
                client = stack.enter_context(Client(cluster))
            else:
                client = stack.enter_context(Client(address))
        rec = stack.enter_context(open_recording(path))
        plan = plan_chunks(rec, params)
        pj = params.to_json()
        chunks = [client.submit(chunk_task, path, pj, i, pure=False) for i in range(plan.n_chunks)]
        small = [client.submit(strip_task, f) for f in chunks]
        bar = tqdm(total=plan.n_chunks, desc="extract: spikes (dask)", disable=not progress,
                   leave=False)  # fmt: skip
        with bar:
            for _ in as_completed(small):
                bar.update()
        results = client.gather(small)
        timings["spikes_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        prep = prepare(rec, summarize(results, plan, None), plan, params)
        timings["units_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        size = group_size(plan.n_decimated, prep.pres.size, params, 0)
        futures = []
        for posts, inp in group_inputs(prep, rec, params, size):
            channels = prep.units.best[posts]
            pieces = [client.submit(rows_task, f, channels) for f in chunks]
            futures.append(client.submit(group_task, inp, *pieces))
        n_groups = math.ceil(prep.posts.size / size)
        with tqdm(total=n_groups, desc="extract: pairs (dask)", disable=not progress,
                  leave=False) as bar:  # fmt: skip
            for _ in as_completed(futures):
                bar.update()
        groups = client.gather(futures)
        del chunks
        timings["pairs_s"] = time.perf_counter() - t2
        result = assemble(
            groups, prep.units, prep.summary, prep.triggers, params,
            duration_s=rec.duration_s, sample_rate_hz=rec.sample_rate_hz,
            n_channels=rec.n_channels, source=rec.source,
        )  # fmt: skip
    timings["total_s"] = time.perf_counter() - t0
    result.timings_s = timings
    return result
