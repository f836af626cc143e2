"""Drift monitoring: every executed batch updates the live state of the version that served it.

The batcher hands each finished batch to :meth:`MonitorThread.observe`, which only queues it: the
callers already have their answers. One thread drains the queue through the numba kernels (which
release the GIL), so updates never race each other and the event loop never waits for them.

A version's :class:`VersionMonitor` keeps a sliding window, built from a ring of sub-window
states that merge exactly, and a state of everything since the version went live. It holds no raw
rows: its memory is a few arrays of columns x bins, whatever the traffic.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from driftline.kernels.drift import DriftState, merge, merge_into, update_state
from driftline.kernels.drift_stats import ColumnDrift, Thresholds, report
from driftline.attribution import Explainer, per_row
from driftline.registry.columns import ATTRIBUTION_SHARE, attribution_shares, monitored_rows
from driftline.registry.profile import Profile
from driftline.registry.table import CATEGORICAL
from driftline.registry.table_view import KIND_WORDS, TableEncoder, TableView, add_words
from driftline.server import language, telemetry, validate
from driftline.server.arrays import on_device, to_host
from driftline.server.batcher import Batch
from driftline.server.validate import WITHHELD

log = logging.getLogger("driftline.server")


@dataclass(frozen=True)
class DriftSettings:
    window_rows: int | None = 10_000  # the window holds about the last N rows...
    window_seconds: float | None = None  # ...or the last T seconds (when set, it wins)
    slots: int = 10  # the window is this many sub-windows; it moves one sub-window at a time
    thresholds: Thresholds = field(default_factory=Thresholds)
    # Fraction of live rows explained off the response path (0: none). 10% of a 10,000-row window is ~1,000 rows,
    # above Thresholds.min_rows_sampled (200) once the window is a fifth full; 5% with a 500-row minimum
    # could hardly ever judge the attribution shares.
    attribution_sample: float = 0.10
    # ...and at most this many rows a second (per version and worker; 0: no bound), so that what sampling costs
    # stops growing with traffic: 500 exact explanations a second take 1-5% of one core for the housing GBM, where
    # 10% of 64-row requests at full speed took a fifth of the server's CPU (benchmarks/RESULTS.md, "The hot path").
    attribution_max_rows_per_s: float = 500.0
    driver_share: float = 0.05  # an out-of-range feature with at least this attribution share flags the row
    beyond_range: float = 0.10  # "out of range": beyond the training min/max by this fraction of the span

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError("slots must be >= 1")
        if not 0 <= self.attribution_sample <= 1 or self.attribution_max_rows_per_s < 0:
            raise ValueError("attribution_sample must be within 0..1 and attribution_max_rows_per_s >= 0")
        if self.window_seconds is None and (self.window_rows is None or self.window_rows < self.slots):
            raise ValueError("set window_seconds, or window_rows of at least one row per slot")

    def describe(self) -> str:
        if self.window_seconds is not None:
            return f"last {self.window_seconds:g} s"
        return f"last {self.window_rows} rows"


@dataclass(frozen=True)
class DriftReport:
    window: str
    current_rows: int
    current: list[ColumnDrift]
    since_live_rows: int
    since_live: list[ColumnDrift]
    new_categories: dict[str, list[str]] = field(default_factory=dict)  # column -> values no training row had


class VersionMonitor:
    def __init__(self, profile: Profile, n_features: int, output_order: Sequence[str], settings: DriftSettings,
                 clock: Callable[[], float] = time.monotonic, explainer: Explainer | None = None,
                 features: Sequence[str] = (), encoder: TableEncoder | None = None) -> None:
        self.profile = profile
        self.n_features = n_features
        self.output_order = tuple(output_order)
        self.resumed = False  # the fleet writer has taken back what this replica wrote before (server/fleet.py)
        # Which profile columns are features and which come from which output ("probabilities[2]").
        self.sources = {name: "feature" if i < n_features or kind == KIND_WORDS else name.split("[")[0]
                        for i, (name, kind) in enumerate(zip(profile.names, profile.kinds, strict=True))}
        self.features = tuple(features) or tuple(profile.names[:n_features])
        self._shares = any(source == ATTRIBUTION_SHARE for source in self.sources.values())
        self._explainer = explainer if self._shares else None
        self.encoder = encoder
        # A mixed table's word tables come last in its profile (see registry.table_view).
        self._words_at = next((i for i, k in enumerate(profile.kinds) if k == KIND_WORDS), len(profile.names))
        attributed = profile.columns[:len(self.features)]  # the columns attributions are given for
        low = np.array([c.min for c in attributed])
        high = np.array([c.max for c in attributed])
        margin = settings.beyond_range * (high - low)
        # A category code is either a training category or unseen: no margin around it.
        categorical = np.array([c.kind == "categorical" for c in attributed], dtype=np.bool_)
        margin[categorical] = 0.0
        self._low, self._high = low - margin, high + margin
        self._training_range = list(zip(low.tolist(), high.tolist(), strict=True))
        self._min_rows = [settings.thresholds.min_rows_sampled if self.sources[n] == ATTRIBUTION_SHARE
                          else language.MIN_WORDS if k == KIND_WORDS else settings.thresholds.min_rows
                          for n, k in zip(profile.names, profile.kinds, strict=True)]
        self.new_categories = NewCategories()
        self.skipped_rows = 0  # served while the monitor was behind: counted here, not in the states
        self._rng = np.random.default_rng(0)
        self._budget = settings.attribution_max_rows_per_s  # rows the sampler may still explain (_within_budget)
        self._budget_at = clock()
        self.attribution = AttributionFlags()
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._closed: deque[tuple[float, DriftState]] = deque()  # (opened at, state), oldest first
        self._current = profile.empty_state()
        self._opened = clock()
        self._total = profile.empty_state()
        self._device: Any = None  # server/device_monitor.py's kernels' data, made by the first batch on the device

    def update(self, rows: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        """Called on the monitor thread only."""
        columns = monitored_rows(rows, outputs, self.output_order)
        if self._shares:
            columns = np.hstack([columns, self._sampled_shares(rows, rows, outputs)])
        self._apply(columns)

    def update_device(self, rows: Any, outputs: dict[str, Any], answers: dict[str, np.ndarray], xp: Any) -> None:
        """:meth:`update` for a batch still on the device (monitor thread only): ``rows`` and ``outputs`` are ``xp``
        arrays there, read by the CUDA kernels; ``answers`` the host outputs (labels and flags read them)."""
        from driftline.server.device_monitor import DeviceMonitoring, Indexed, monitored_columns

        if self._device is None:
            self._device = DeviceMonitoring(self.profile.layout, self._explainer)
        columns = monitored_columns(xp, rows, outputs, self.output_order)
        if self._shares:
            sampled = Indexed(rows, xp)
            shares = self._sampled_shares(sampled, sampled, answers, explainer=self._device)
            columns = xp.concatenate([columns, on_device(shares, xp)], axis=1)  # NaN but for the sampled rows
        batch = self._device.batch_state(self.profile.empty_state(), columns)
        with self._lock:
            self._rotate()
            merge_into(self._current, batch)
            merge_into(self._total, batch)

    def update_table(self, view: TableView, outputs: dict[str, np.ndarray], inputs: dict[str, np.ndarray]) -> None:
        """A mixed table's batch (monitor thread only): its view, the model's outputs (the encoded matrix among
        them, which attributions are computed on) and the columns as sent (for the values flags name)."""
        answers = {k: outputs[k] for k in self.output_order}
        columns = monitored_rows(view.matrix, answers, self.output_order)
        if self._shares:
            encoded = outputs[self.encoder.spec.encoded_output]
            values = view.matrix[:, : len(self.features)]
            columns = np.hstack([columns, self._sampled_shares(encoded, values, answers, inputs)])
        words = self.encoder.words_of(view)
        if words:
            columns = np.hstack([columns, np.full((len(columns), len(words)), np.nan)])
        for name, unseen in view.unseen.items():
            if unseen.any():
                self.new_categories.add(name, np.asarray(inputs[name]).reshape(-1)[unseen])
        self._apply(columns, words)

    def _apply(self, columns: np.ndarray, words: Sequence[np.ndarray] = ()) -> None:
        with self._lock:
            self._rotate()
            for state in (self._current, self._total):
                update_state(state, columns, self.profile.layout)
                if words:
                    add_words(state.counts, state.missing, self._words_at, words, len(columns))

    def _sampled_shares(self, explained: np.ndarray, values: np.ndarray, outputs: dict[str, np.ndarray],
                        inputs: dict[str, np.ndarray] | None = None, explainer: Any = None) -> np.ndarray:
        """Attribution shares of a random sample of the rows (NaN, i.e. missing, for the others). ``explained``
        is what the explainer reads, ``values`` one value per attributed column (the range check's)."""
        shares = np.full((len(values), len(self.features)), np.nan)
        if self._explainer is None or self.settings.attribution_sample <= 0:
            return shares
        picked = np.flatnonzero(self._rng.random(len(values)) < self.settings.attribution_sample)
        picked = self._within_budget(picked)
        if not len(picked):
            return shares
        phi, base = (explainer or self._explainer).explain(explained[picked], n_threads=1)  # beside serving: one core
        labels = outputs["label"][picked] if "label" in outputs else None
        per_feature, _ = per_row(phi, base, labels)
        shares[picked] = attribution_shares(per_feature)
        sent = {k: np.asarray(v).reshape(-1)[picked] for k, v in inputs.items()} if inputs is not None else None
        self._flag(to_host(values[picked]), shares[picked], {k: v[picked] for k, v in outputs.items()}, sent)
        return shares

    def _within_budget(self, picked: np.ndarray) -> np.ndarray:
        """``picked``, thinned at random to the rows the per-second bound still allows (a token bucket holding at
        most one second's worth, so a quiet spell does not save up a burst)."""
        limit = self.settings.attribution_max_rows_per_s
        if not limit or not len(picked):
            return picked
        now = self._clock()
        self._budget = min(limit, self._budget + (now - self._budget_at) * limit)
        self._budget_at = now
        allowed = int(self._budget)
        if len(picked) > allowed:
            picked = np.sort(self._rng.choice(picked, size=allowed, replace=False))
        self._budget -= len(picked)
        return picked

    def _flag(self, rows: np.ndarray, shares: np.ndarray, outputs: dict[str, np.ndarray],
              sent: dict[str, np.ndarray] | None = None) -> None:
        """Rows whose prediction leans on a value no training row had (a 120 m2 garage, an unseen district)."""
        outside = (rows < self._low) | (rows > self._high)
        driven = outside & (shares >= self.settings.driver_share)
        for r in np.flatnonzero(driven.any(axis=1)):
            f = int(np.argmax(np.where(driven[r], shares[r], -1.0)))
            name = self.features[f]
            categorical = self.encoder is not None and self.encoder.spec.column(name).role == CATEGORICAL
            if not self.attribution.show_values:
                # The row and its answer are another caller's: say which feature and why, not what was sent.
                why = "a category no training row had" if categorical else "outside the training range"
                self.attribution.flag(f"{name}={WITHHELD} ({why}) drives {shares[r, f]:.0%} of the answer")
                continue
            answer = "; ".join(f"{k} " + ", ".join(f"{x:,.4g}" for x in np.asarray(v[r]).reshape(-1).tolist())
                               for k, v in outputs.items())
            if categorical:
                value = f"{name}={str(sent[name][r])[:100]!r} (a category no training row had)"
            else:
                low, high = self._training_range[f]
                value = f"{name}={float(rows[r, f]):g} (training range {low:g}..{high:g})"
            self.attribution.flag(f"{value} drives {shares[r, f]:.0%} of the answer ({answer})")
        # Counted after their flags: a report (read without a lock) that counts these rows holds what they flagged.
        self.attribution.sampled_rows += len(rows)

    def states(self) -> tuple[DriftState, DriftState]:
        """Copies of (window, since live), safe to read while updates go on."""
        with self._lock:
            self._rotate()
            window = self._current.copy()
            for _, state in self._closed:
                merge_into(window, state)
            return window, self._total.copy()

    def slots(self) -> tuple[list[tuple[float, DriftState]], DriftState]:
        """Copies of the window's sub-windows as (seconds since each opened, state), oldest first, the one
        still filling last; and the since-live state. What a replica writes for the fleet (server/fleet.py)."""
        with self._lock:
            self._rotate()
            now = self._clock()
            ring = [(now - opened, state.copy()) for opened, state in self._closed]
            ring.append((now - self._opened, self._current.copy()))
            return ring, self._total.copy()

    def resume(self, ring: Sequence[tuple[float, DriftState]], total: DriftState) -> None:
        """Take back the window and since-live state a previous run of this replica wrote (``ring`` as
        :meth:`slots` gives it, ages counted up to now). States merge exactly, so rows served before the resume
        are kept: the saved sub-windows go before this run's, the since-live states add up."""
        if any(state.counts.shape != self._total.counts.shape for _, state in ring) or (
                total.counts.shape != self._total.counts.shape):
            raise ValueError(f"a saved drift state has shape {total.counts.shape}, this version's is "
                             f"{self._total.counts.shape}: it is of another profile")
        with self._lock:
            now = self._clock()
            saved = [(now - age, state.copy()) for age, state in ring]
            if not self._closed and not self._current.rows and saved:
                # The usual case, a restart before any traffic: the window is exactly as it was written.
                (self._opened, self._current), saved = saved[-1], saved[:-1]
            self._closed = deque(sorted([*saved, *self._closed], key=lambda slot: slot[0]))
            merge_into(self._total, total)
            self._rotate()

    def report(self, extra: Sequence[tuple[DriftState, DriftState]] = ()) -> DriftReport:
        """This monitor's report, with other workers' states for the same version merged in."""
        window, total = self.states()
        for other_window, other_total in extra:
            window, total = merge(window, other_window), merge(total, other_total)
        return DriftReport(
            window=self.settings.describe() + (f"; {self.skipped_rows:,} rows served while monitoring was behind "
                                               "were not counted" if self.skipped_rows else ""),
            current_rows=window.rows,
            current=self._columns(window),
            since_live_rows=total.rows,
            since_live=self._columns(total),
            new_categories=self.new_categories.to_dict(),
        )

    def _columns(self, state: DriftState) -> list[ColumnDrift]:
        columns = report(state, self.profile, self.settings.thresholds, min_rows=self._min_rows)
        if self.encoder is not None:
            for k, text in enumerate(self.encoder.texts):
                at = self._words_at + k
                columns[at] = language.judge(columns[at], state.counts[at], self.profile.reference.counts[at], text,
                                              self._min_rows[at])
            new = self.new_categories.to_dict()
            for i, column in enumerate(columns[: len(self.encoder.spec.columns)]):
                if column.name in new:  # the other bin's values, by name
                    listed = "new categories: " + ", ".join(new[column.name][:5])
                    columns[i] = replace(column, note=f"{column.note}; {listed}" if column.note else listed)
        return columns

    def _rotate(self) -> None:
        now = self._clock()
        s = self.settings
        if s.window_seconds is not None:
            if now - self._opened >= s.window_seconds / s.slots:
                self._close(now)
            while self._closed and now - self._closed[0][0] > s.window_seconds:
                self._closed.popleft()
        else:
            if self._current.rows >= s.window_rows / s.slots:
                self._close(now)
            while len(self._closed) > s.slots - 1:  # also after a resume handed over more sub-windows
                self._closed.popleft()

    def _close(self, now: float) -> None:
        self._closed.append((self._opened, self._current))
        self._current = self.profile.empty_state()
        self._opened = now


@dataclass
class NewCategories:
    """Values of categorical columns that no training row had, most frequent first (bounded per column).

    Anyone who may read drift reports sees these names, so a value is named only once ``named_from`` rows carried
    it: a new district that hundreds of listings share is news; one person's name typed into the column is not
    repeated to every reader (the count is still in the column's statistics).
    """

    kept: int = 20
    named_from: int = 5
    seen: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, column: str, values: np.ndarray) -> None:
        table = self.seen.setdefault(column, {})
        for value in values.tolist():
            value = str(value)
            if value in table or len(table) < 4 * self.kept:
                table[value] = table.get(value, 0) + 1
        if len(table) >= 4 * self.kept:  # keep the heavy hitters, forget the tail
            self.seen[column] = dict(sorted(table.items(), key=lambda kv: -kv[1])[: self.kept])

    def to_dict(self) -> dict[str, list[str]]:
        named = {c: [v for v, n in sorted(t.items(), key=lambda kv: (-kv[1], kv[0]))[: self.kept]
                     if n >= self.named_from] for c, t in self.seen.items()}
        return {c: values for c, values in named.items() if values}


@dataclass
class AttributionFlags:
    """Rows explained by sampling, and those driven by a feature outside the training range."""

    sampled_rows: int = 0
    flagged_rows: int = 0
    examples: deque[str] = field(default_factory=lambda: deque(maxlen=10))
    # Examples name live values only when the operator asked (--show-rejected-values): see server/validate.py.
    show_values: bool = field(default_factory=lambda: validate.show_rejected_values)

    def flag(self, example: str) -> None:
        self.flagged_rows += 1
        self.examples.append(example)

    def to_dict(self) -> dict[str, object]:
        return {"sampled_rows": self.sampled_rows, "flagged_rows": self.flagged_rows, "examples": list(self.examples)}

    @staticmethod
    def merged(parts: Sequence[dict]) -> dict[str, object]:
        return {"sampled_rows": sum(p.get("sampled_rows", 0) for p in parts),
                "flagged_rows": sum(p.get("flagged_rows", 0) for p in parts),
                "examples": [e for p in parts for e in p.get("examples", [])][-10:]}


MAX_BATCHES_PER_UPDATE = 1024
MAX_ROWS_PER_UPDATE = 50_000  # one update's concatenated arrays stay a few megabytes
MAX_QUEUED_ROWS = 200_000  # rows waiting for the monitor; beyond it batches are counted, not monitored
DRAIN_PAUSE_S = 0.1


class MonitorThread:
    """Drains finished batches into their version's monitor, off the response path.

    Its queue is bounded in rows: when traffic outruns the monitor (a flood of 20,000-row requests), batches
    beyond ``max_queued_rows`` are not monitored but counted per version and said in the drift report, so
    monitoring never holds more than a bounded amount of memory and serving never waits for it.

    Handing a batch over is the event loop's per-batch cost of monitoring, so it takes no lock: the loop appends
    to a deque (atomic in CPython) and counts the rows it added, the monitor thread counts those it took (each
    counter has one writer), and the thread is woken only when it sleeps for want of work.
    """

    def __init__(self, max_queued_rows: int = MAX_QUEUED_ROWS) -> None:
        self._items: deque[tuple[VersionMonitor | None, Any] | None] = deque()
        self._wake = threading.Event()
        self._waiting = False  # the thread sleeps on _wake: the next producer sets it
        self._added = 0  # rows handed over (written by the producing thread only)
        self._taken = 0  # rows applied or dropped (written by the monitor thread only)
        self._max_rows = max_queued_rows
        self._thread = threading.Thread(target=self._drain, name="driftline-monitor", daemon=True)
        self._thread.start()
        self.failures = 0

    def observer(self, monitor: VersionMonitor) -> Callable[[Batch], None]:
        def observe(batch: Batch) -> None:
            rows = batch.row_count
            queued = self._added - self._taken
            if queued and queued + rows > self._max_rows:
                monitor.skipped_rows += rows
                return
            self._added += rows
            self._put((monitor, batch))

        return observe

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far has been applied (tests and shutdown)."""
        done = threading.Event()
        self._put((None, done.set))
        done.wait(timeout)

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """``fn()`` on the monitor thread, after everything queued before it; its result. Reading or changing a
        monitor's state there (the fleet writer does) races with no update. Once the thread has stopped, ``fn``
        runs here. Raises TimeoutError when the thread is that far behind (``fn`` still runs later)."""
        if not self._thread.is_alive():
            return fn()
        done, box = threading.Event(), {}

        def run() -> None:
            try:
                box["result"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box["error"] = exc
            finally:
                done.set()

        self._put((None, run))
        if not done.wait(timeout):
            raise TimeoutError(f"the drift monitor did not get to the call within {timeout:g} s")
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def close(self) -> None:
        self._put(None)
        self._thread.join(timeout=10)

    def _put(self, item: tuple[VersionMonitor | None, Any] | None) -> None:
        self._items.append(item)
        if self._waiting:  # read after the append: a thread about to sleep re-checks the deque after saying so
            self._wake.set()

    def _next(self) -> tuple[VersionMonitor | None, Any] | None:
        """The oldest item, sleeping until there is one."""
        while not self._items:
            self._waiting = True
            if not self._items:
                self._wake.wait()
            self._waiting = False
            self._wake.clear()
        return self._items.popleft()

    def _drain(self) -> None:
        while (item := self._next()) is not None:
            pending = [item]
            rows = _rows(item)
            # Take whatever else has queued meanwhile: one kernel call per version for many batches costs
            # far less Python (and GIL) per batch than one call each, and the state is the same.
            while self._items and len(pending) < MAX_BATCHES_PER_UPDATE and rows < MAX_ROWS_PER_UPDATE:
                pending.append(self._items.popleft())
                rows += _rows(pending[-1])
            stop = any(p is None for p in pending)
            self._apply([p for p in pending if p is not None])
            self._taken += rows
            if stop:
                return
            # Let batches gather: every wake-up takes the GIL from the event loop, so fewer, larger
            # updates cost serving less (a drift window does not need to be current to the millisecond).
            time.sleep(DRAIN_PAUSE_S)

    def _apply(self, items: list[tuple[VersionMonitor | None, Any]]) -> None:
        plain: dict[int, tuple[VersionMonitor, list[Batch]]] = {}
        for monitor, batch in items:
            if monitor is None:
                self._apply_grouped(plain)
                plain = {}
                batch()  # a flush marker or a call: everything queued before it is applied
            elif batch.trace is not None or batch.device is not None:
                # A sampled batch keeps its own span, after the answers; one on the device is read where it is.
                self._update(monitor, [batch], traced=batch.trace is not None)
            else:
                plain.setdefault(id(monitor), (monitor, []))[1].append(batch)
        self._apply_grouped(plain)

    def _apply_grouped(self, groups: dict[int, tuple[VersionMonitor, list[Batch]]]) -> None:
        for monitor, batches in groups.values():
            self._update(monitor, batches, traced=False)

    def _update(self, monitor: VersionMonitor, batches: list[Batch], traced: bool) -> None:
        rows = sum(b.row_count for b in batches)
        try:
            if monitor.encoder is not None:
                _update_table(monitor, batches)
            elif batches[0].device is not None:  # still on the device: the CUDA kernels read it there
                device = batches[0].device
                with telemetry.drift_update(batches[0].trace, rows) if traced else contextlib.nullcontext():
                    monitor.update_device(device.inputs[batches[0].version.input.name], device.outputs,
                                          batches[0].outputs, device.xp)
            elif traced:
                with telemetry.drift_update(batches[0].trace, rows):
                    monitor.update(batches[0].rows, batches[0].outputs)
            elif len(batches) == 1:
                monitor.update(batches[0].rows, batches[0].outputs)
            else:
                outputs = {name: np.concatenate([b.outputs[name] for b in batches]) for name in batches[0].outputs}
                monitor.update(np.concatenate([b.rows for b in batches]), outputs)
        except Exception:  # noqa: BLE001 - monitoring must never take serving down
            self.failures += 1
            log.exception("drift update failed for %d rows", rows)


def _update_table(monitor: VersionMonitor, batches: list[Batch]) -> None:
    """A mixed table's batches in one update: the views validation made, or made here when it did not."""
    outputs = {name: np.concatenate([b.outputs[name] for b in batches]) for name in batches[0].outputs}
    inputs = {name: np.concatenate([b.inputs[name] for b in batches]) for name in batches[0].inputs}
    views = [v for b in batches for v in b.views] if all(b.views is not None for b in batches) else None
    view = TableView.concat(views) if views else monitor.encoder.view(inputs)
    monitor.update_table(view, outputs, inputs)


def _rows(item: tuple[VersionMonitor | None, Batch] | None) -> int:
    """Rows an item of the monitor's queue holds (a flush marker or the stop holds none)."""
    if item is None or item[0] is None:
        return 0
    return item[1].row_count
