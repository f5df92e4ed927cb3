"""The whole loop as resumable stages: check → calibrate → record → extract → imprint → report.

A session is one folder: ``session.h5`` (every stage's data), ``state.json`` (which
stages finished, with their key figures), ``session.log`` and ``report.html``.
Running a session that already has some stages done continues from the first one
not done. A stage that loses an instrument retries it a bounded number of times
(reconnecting); after that the session pauses cleanly — state saved, outputs off —
and a rerun continues it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from calibration.records import json_default
from drivers.errors import CommunicationError, SafetyLimitError
from instrument.cli import LOG_FORMAT
from instrument.config import ConfigError, LabConfig

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
LOG_FILE = "session.log"
STAGES = ("check", "calibrate", "record", "extract", "imprint", "report")


class SessionPaused(RuntimeError):
    """A stage could not finish after its retries; the session is saved and can be rerun."""

    def __init__(self, stage: str, cause: BaseException, folder: Path) -> None:
        self.stage, self.cause, self.folder = stage, cause, folder
        super().__init__(
            f"stage {stage!r} paused after retries: {type(cause).__name__}: {cause}. "
            f"Nothing already taken is lost; rerun with --out {folder} to continue."
        )


class SessionFailed(RuntimeError):
    """A stage failed for a reason retrying cannot fix (bad configuration, bad data)."""


@dataclass
class StageState:
    """What ``state.json`` says about one stage."""

    status: str = "pending"
    """pending, running, done, paused or failed."""
    started_utc: str = ""
    finished_utc: str = ""
    duration_s: float = 0.0
    attempts: int = 0
    figures: dict[str, Any] = field(default_factory=dict)
    """Key figures (frames lost, scores, yield…), JSON-able, SI units."""
    error: str = ""


@dataclass
class SessionState:
    """The whole ``state.json``: per-stage state plus what the session was asked to do."""

    stages: dict[str, StageState] = field(
        default_factory=lambda: {name: StageState() for name in STAGES}
    )
    options: dict[str, Any] = field(default_factory=dict)
    created_utc: str = ""

    @classmethod
    def load(cls, folder: Path) -> SessionState:
        path = folder / STATE_FILE
        if not path.exists():
            return cls(created_utc=_utc_now())
        try:
            data = json.loads(path.read_text())
            stages = {n: StageState(**data["stages"].get(n, {})) for n in STAGES}
            return cls(
                stages=stages,
                options=data.get("options", {}),
                created_utc=data.get("created_utc", ""),
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise SessionFailed(f"{path} is not a session state file: {exc}") from exc

    def save(self, folder: Path) -> None:
        """Write ``state.json`` atomically (a crash leaves the old or the new, never half)."""
        tmp = folder / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, default=json_default))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, folder / STATE_FILE)


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class RunOptions:
    """What ``brainpaste run`` was asked to do (kept in state.json; a rerun keeps them)."""

    duration_s: float = 60.0
    """Recording length, s."""
    technology: str = ""
    """Memory technology for the imprint ("" = the lab's crossbar technology)."""
    physical: bool = False
    """Imprint physically (drive rows/columns with the recorded spikes)."""
    electroporate_v: float = 2.5
    electroporate_width_s: float = 1e-3
    retries: int = 3
    """Attempts per stage when an instrument drops off (then pause)."""
    retry_delay_s: float = 2.0
    """Wait between attempts, s (an instrument coming back)."""
    progress: bool = True


@dataclass
class StageContext:
    """What a stage gets: the session folder, its file, the configuration, the options."""

    folder: Path
    config: LabConfig
    options: RunOptions
    state: SessionState

    @property
    def session_file(self) -> Path:
        from instrument.session_files import SESSION_FILE

        return self.folder / SESSION_FILE


StageFn = Callable[[StageContext], dict[str, Any]]


class Session:
    """Runs the stages of one session folder in order, resuming where it stopped."""

    def __init__(
        self,
        folder: Path | str,
        config: LabConfig,
        options: RunOptions,
        stages: dict[str, StageFn],
        make_safe: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.config = config
        self.options = options
        self.stage_fns = stages
        self.make_safe = make_safe
        """Leaves every instrument safe (outputs off, lines grounded): called before the
        first stage (a killed run may have left one on) and after a pause or failure."""
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stages {sorted(unknown)}")

    def run(
        self, *, until: str | None = None, on_stage: Callable[[str, StageState], None] | None = None
    ) -> SessionState:
        """Run every stage not yet done (up to and including ``until``); the final state.

        Raises :class:`SessionPaused` (rerun to continue) or :class:`SessionFailed`.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        state = SessionState.load(self.folder)
        if not state.options:
            state.options = asdict(self.options)
        with self._log_to_file():
            log.info(
                "session %s: stages done so far: %s",
                self.folder,
                [n for n, s in state.stages.items() if s.status == "done"] or "none",
            )
            pending = [
                n for n in STAGES if n in self.stage_fns and state.stages[n].status != "done"
            ]
            if pending:
                self._safe("before running")
            try:
                for name in STAGES:
                    if name not in self.stage_fns:
                        continue
                    stage = state.stages[name]
                    if stage.status == "done":
                        log.info("stage %s: already done, skipped", name)
                    else:
                        self._run_stage(name, stage, state, on_stage)
                    if until == name:
                        break
            except BaseException:
                self._safe("after stopping")
                raise
        return state

    def _safe(self, when: str) -> None:
        """Every instrument to its safe state; what could not be made safe is logged loudly."""
        if self.make_safe is None:
            return
        try:
            results = self.make_safe()
        except Exception:  # never let the safety net hide the original problem
            log.exception("making the instruments safe %s failed", when)
            return
        for name, result in results.items():
            if result == "safe":
                log.info("%s safe %s", name, when)
            else:
                log.error(
                    "%s could NOT be made safe %s: %s — check its outputs by hand",
                    name,
                    when,
                    result,
                )

    def _run_stage(
        self,
        name: str,
        stage: StageState,
        state: SessionState,
        on_stage: Callable[[str, StageState], None] | None,
    ) -> None:
        ctx = StageContext(self.folder, self.config, self.options, state)
        stage.status, stage.started_utc, stage.error = "running", _utc_now(), ""
        state.save(self.folder)
        if on_stage:
            on_stage(name, stage)
        start = time.monotonic()
        for attempt in range(1, self.options.retries + 1):
            stage.attempts += 1
            try:
                figures = self.stage_fns[name](ctx)
                break
            except (SafetyLimitError, ConfigError) as exc:
                self._end(stage, state, start, "failed", exc)
                raise SessionFailed(f"stage {name!r}: {exc}") from exc
            except (CommunicationError, SessionRetry) as exc:
                log.warning(
                    "stage %s attempt %d/%d: %s: %s",
                    name,
                    attempt,
                    self.options.retries,
                    type(exc).__name__,
                    exc,
                )
                if attempt == self.options.retries:
                    self._end(stage, state, start, "paused", exc)
                    raise SessionPaused(name, exc, self.folder) from exc
                time.sleep(self.options.retry_delay_s)
            except Exception as exc:  # anything else: the stage failed, say why
                log.exception("stage %s failed", name)
                self._end(stage, state, start, "failed", exc)
                raise SessionFailed(f"stage {name!r}: {type(exc).__name__}: {exc}") from exc
            except BaseException as exc:  # Ctrl-C: leave a truthful state behind
                self._end(stage, state, start, "paused", exc)
                raise
        stage.figures = figures or {}
        self._end(stage, state, start, "done", None)
        log.info("stage %s done in %.1f s: %s", name, stage.duration_s, stage.figures)
        if on_stage:
            on_stage(name, stage)

    def _end(
        self,
        stage: StageState,
        state: SessionState,
        start: float,
        status: str,
        exc: BaseException | None,
    ) -> None:
        stage.status = status
        stage.finished_utc = _utc_now()
        stage.duration_s += time.monotonic() - start
        stage.error = f"{type(exc).__name__}: {exc}" if exc is not None else ""
        state.save(self.folder)

    @contextlib.contextmanager
    def _log_to_file(self) -> Iterator[None]:
        handler = logging.FileHandler(self.folder / LOG_FILE)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.setLevel(logging.INFO)
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
            for h in root.handlers:
                if h is not handler and h.level == logging.NOTSET:
                    h.setLevel(old_level or logging.WARNING)
        try:
            yield
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
            handler.close()


class SessionRetry(RuntimeError):
    """A stage asks to be retried (an instrument dropped off and may come back)."""
