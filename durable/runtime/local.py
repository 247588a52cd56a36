"""The local driver: runs instances in this process, activities on a thread pool.

One scheduler thread steps instances (one at a time, so an instance is never
stepped twice at once in a process); activities run on a pool of worker
threads, and their outcomes are committed by their instance's next step,
together with what the workflow does next. A step's activities start as
soon as its commit can no longer lose to another worker: with SQLite, while
the commit is being flushed to disk, so that the activity and the fsync
overlap. Should that commit still fail, the attempts it started are
disowned (their outcomes dropped) and run again once a commit schedules
them: at least once, as always. Timers wait on the
real clock, or, with ``time_skipping=True``, on a virtual clock that jumps to
the next timer whenever nothing else can make progress and a caller is
blocked in :meth:`Runtime.wait`.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from durable.codec import decode, encode
from durable.errors import (
    ConfigurationError,
    InstanceFinishedError,
    InstanceNotFoundError,
    WorkflowFailed,
)
from durable.history import (
    ActivityResult,
    CancelMessage,
    Event,
    EventMessage,
    InstanceStatus,
    Message,
    Status,
    TerminateMessage,
)
from durable.replay import ActivityWork, Decision
from durable.runtime.activity import failed_result, run_activity
from durable.runtime.clock import Clock, SystemClock, VirtualClock
from durable.runtime.presence import open_presence
from durable.runtime.start import check_instance_id, check_text, create_instance, encode_input
from durable.runtime.step import DEFAULT_LIVE_RUNS, LiveRuns, step
from durable.store import HistoryStore, open_store
from durable.workflow import Workflow, get_workflow

R = TypeVar("R")
log = logging.getLogger("durable.runtime")

StepListener = Callable[[str, Decision], None]
"""Called after every step that decided something: ``(instance_id, decision)``."""

_POLL_SECONDS = 0.5
_SWEEP_SECONDS = 2.0  # real seconds between looks for abandoned attempts
_ERROR_BACKOFF = 1.0  # seconds of real time before a step that raised is tried again
_AttemptKey = tuple[str, int, int, int]  # instance, run, task id, attempt

# The life of one activity attempt in ``Runtime._attempts``:
#
#   dispatched ──> "running" ──(returns)──> "delivering" ──(posted)──> gone
#                      │
#                      └──(deadline)──> "timed_out" ──(failure posted)──> gone
#
# An attempt stays in the table until its outcome is in the store's inbox
# *and* its instance is queued, so time skipping (which needs the table
# empty) can never jump over a result that is on its way. The late return of
# a timed-out attempt finds its entry gone or "timed_out" and is dropped.
_RUNNING, _DELIVERING, _TIMED_OUT = "running", "delivering", "timed_out"


class Runtime:
    """Drives workflow instances in the background, from creation until :meth:`close`.

    Args:
        store: ``None`` (a fresh in-memory store), a store URL such as
            ``"sqlite:///.durable/durable.db"``, a path, or a store object.
        time_skipping: jump virtual time to the next timer whenever nothing
            else can progress and someone waits (for tests and demos).
        max_workers: threads running activities at once.
        workflows: workflows this runtime can resume by name, in addition to
            those registered with ``@workflow`` (found by name) and those
            passed to :meth:`start`.
        orphan_after: seconds without any commit after which an instance's
            outstanding activity attempts count as abandoned even while other
            workers are alive (see "Several workers" below).
        live_runs: how many instances' generators are kept live between
            steps, so that a step resumes the workflow instead of replaying
            its whole history (0: always replay).

    Creating a runtime on an existing store resumes every unfinished
    instance in it, STUCK ones included.

    Several workers (runtimes in other processes, or in this one) may share a
    store: an instance is stepped by whoever gets to it, and a commit that
    lost the race is re-done on the new version or found unnecessary. Who
    runs an activity attempt:

    * the worker whose step committed the decision that scheduled it (its
      ``decision.dispatch``), and nobody else while that worker lives;
    * outstanding attempts nobody is running any more (their worker died or
      closed before posting a result) are *adopted*: a runtime steps the
      instance and starts every attempt its history still waits for
      (``decision.pending``) that this runtime is not already running. It
      does so at start-up when no other worker is alive on the store, as
      soon as it finds that another worker died (see
      :mod:`durable.runtime.presence`: a lock file per worker on a SQLite
      file, a heartbeat item per worker on DynamoDB, this process's
      runtimes otherwise), and for an instance that has
      seen no commit for ``orphan_after`` seconds.

    An attempt may therefore run twice only after a worker died, or when it
    runs longer than ``orphan_after`` while several workers are alive: at
    least once, as promised; its result is recorded once either way.
    """

    def __init__(
        self,
        store: HistoryStore | str | Path | None = None,
        *,
        time_skipping: bool = False,
        max_workers: int = 8,
        workflows: tuple[Workflow[Any, Any], ...] = (),
        orphan_after: float = 300.0,
        live_runs: int = DEFAULT_LIVE_RUNS,
    ) -> None:
        if max_workers < 1:
            raise ConfigurationError(f"max_workers must be at least 1, got {max_workers}")
        self._owns_store = not (store is not None and not isinstance(store, str | Path))
        self.store: HistoryStore = open_store(store)
        self.clock: Clock = VirtualClock() if time_skipping else SystemClock()
        self.time_skipping = time_skipping
        self._workflows: dict[str, Workflow[Any, Any]] = {wf.name: wf for wf in workflows}
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="durable-activity")
        self._cond = threading.Condition()
        self._ready: deque[str] = deque()
        self._queued: set[str] = set()
        # Timers: a heap of (when, instance); an entry counts only while it is
        # the instance's current wake time in ``_wake`` (stale ones are skipped).
        self._timers: list[tuple[datetime, str]] = []
        self._wake: dict[str, datetime] = {}
        self._attempts: dict[_AttemptKey, str] = {}
        # Outcomes of attempts that finished, for the next step of their instance to commit.
        self._outcomes: dict[str, list[Message]] = {}
        self._deadlines: list[tuple[datetime, _AttemptKey, ActivityWork]] = []
        self._recovering: set[str] = set()
        # Adoption of abandoned attempts (see the class docstring): instances whose
        # next step starts every outstanding attempt if it finds them at the version
        # given (None: at any version), attempts this runtime already
        # delivered (never started again by it), and the version at which each
        # quiet instance was last checked (so that it is checked once per version).
        self._orphans: dict[str, int | None] = {}
        self._delivered: dict[str, set[_AttemptKey]] = {}
        self._stuck: dict[str, int] = {}  # STUCK steps per unfinished instance (see wait)
        self._ends = 0  # instances this runtime saw end (see wait)
        self._checked: dict[str, int] = {}
        self._orphan_after = timedelta(seconds=orphan_after)
        self._last_sweep = _monotonic()
        self._stepping: str | None = None
        self._listeners: list[StepListener] = []
        self._waiters = 0
        self._closed = False
        self._last_poll = 0.0
        self._presence = open_presence(self.store)
        self._live_runs = LiveRuns(live_runs)
        unfinished = self.store.list_instances(
            status=[Status.PENDING, Status.RUNNING, Status.STUCK], limit=1_000_000
        )
        alive, died = self._presence.others()
        for header in unfinished:
            self._recovering.add(header.instance_id)
            if alive == 0 or died:
                # A worker starting now may schedule attempts and run them itself.
                self._orphans[header.instance_id] = None if died else header.version
            self._enqueue_locked(header.instance_id)
        if isinstance(self.clock, VirtualClock) and unfinished:
            # A previous runtime may have skipped ahead: never let time run backwards.
            self.clock.advance_to(max(h.updated_at for h in unfinished))
        self._thread = threading.Thread(target=self._loop, name="durable-scheduler", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API

    def start(
        self,
        wf: Workflow[Any, Any] | str,
        input: Any = None,
        instance_id: str | None = None,
    ) -> str:
        """Create an instance of ``wf`` and return its id at once; it runs in the background.

        Starting again with the same ``instance_id`` and input returns that id
        and changes nothing.

        Raises:
            UnknownWorkflowError: ``wf`` is a name no workflow is registered under.
            SerializationError: ``input`` does not fit the workflow's input type.
            InstanceExistsError: the id is taken by another workflow or input.
        """
        self._check_open()
        workflow = self._remember(wf)
        payload = encode_input(workflow, input)
        iid, _ = create_instance(self.store, workflow, payload, instance_id, self.clock.now())
        self._enqueue(iid)
        return iid

    def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        """Deliver event ``name`` with ``data``; buffered if the workflow is not waiting yet.

        Raises:
            InstanceNotFoundError, InstanceFinishedError
            ValueError: an empty name, or one that is not valid Unicode text.
            SerializationError: ``data`` is not JSON or nests too deeply.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"event name must be a non-empty string, got {name!r}")
        check_text(name, "event name")
        payload = encode(data, what=f"data of event {name!r}")
        self._post(
            instance_id, EventMessage(event=name, data=payload, received_at=self.clock.now())
        )

    def cancel(self, instance_id: str, reason: str = "") -> None:
        """Ask the workflow to stop: it sees ``Cancelled`` at its current ``yield``."""
        self._post(instance_id, CancelMessage(reason=reason, received_at=self.clock.now()))

    def terminate(self, instance_id: str, reason: str = "") -> None:
        """End the instance at once, running no more of its code."""
        self._post(instance_id, TerminateMessage(reason=reason, received_at=self.clock.now()))

    def status(self, instance_id: str) -> InstanceStatus:
        """Where the instance stands.

        Raises:
            InstanceNotFoundError: unknown id.
        """
        header = self.store.get(instance_id)
        if header is None:
            raise InstanceNotFoundError(instance_id)
        return header

    def history(self, instance_id: str) -> list[Event]:
        """The current run's events (a continued-as-new instance starts a fresh list)."""
        return self.store.history(instance_id)

    def wait(self, instance_id: str, timeout: float | None = None) -> Any:
        """Block until the instance (and its continue-as-new chain) ends; return its result.

        Raises:
            WorkflowFailed: it ended FAILED, CANCELED or TERMINATED, or is STUCK
                (after this runtime retried it with the code it has).
            TimeoutError: ``timeout`` seconds passed first.
            InstanceNotFoundError: unknown id.
        """
        deadline = None if timeout is None else _monotonic() + timeout
        with self._cond:
            self._waiters += 1
            self._cond.notify_all()
        try:
            while True:
                with self._cond:
                    mark = self._progress(instance_id)
                header = self.status(instance_id)
                if header.status.is_terminal or (
                    header.status == Status.STUCK and not self._may_unstick(instance_id)
                ):
                    return self._outcome(header)
                remaining = None if deadline is None else deadline - _monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"instance {instance_id!r} is still {header.status} after {timeout}s"
                    )
                # Read again once this runtime found the instance STUCK or saw one end (it
                # may be this one), or after a poll interval (another worker may have).
                until = _monotonic() + min(_POLL_SECONDS, remaining or _POLL_SECONDS)
                with self._cond:
                    while self._progress(instance_id) == mark and not self._closed:
                        left = until - _monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
        finally:
            with self._cond:
                self._waiters -= 1

    def _progress(self, instance_id: str) -> tuple[int | None, int]:
        """What changes when this runtime finds ``instance_id`` STUCK or sees any instance end
        (holding the lock): what ``wait`` waits for."""
        return self._stuck.get(instance_id), self._ends

    def add_listener(self, listener: StepListener) -> None:
        """Call ``listener(instance_id, decision)`` after every step (from the scheduler thread)."""
        self._listeners.append(listener)

    def close(self) -> None:
        """Stop working; activities still running are abandoned.

        They run again on restart, or soon on another worker alive on the
        store: it is told this one died.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=10)
        self._live_runs.clear()
        with self._cond:
            held, self._outcomes = self._outcomes, {}
        self._post_held(held)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._cond:
            abandoned = bool(self._attempts)
        self._presence.close(abandoned=abandoned)
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigurationError("this Runtime is closed")

    def _may_unstick(self, instance_id: str) -> bool:
        """Whether a step of a STUCK instance is still to come (queued, recovering or running)."""
        with self._cond:
            return (
                instance_id in self._queued
                or instance_id in self._recovering
                or self._stepping == instance_id
            )

    def _remember(self, wf: Workflow[Any, Any] | str) -> Workflow[Any, Any]:
        if isinstance(wf, str):
            return self._resolve(wf)
        if not isinstance(wf, Workflow):
            raise ConfigurationError(f"not a @workflow: {wf!r}")
        self._workflows[wf.name] = wf
        return wf

    def _resolve(self, name: str) -> Workflow[Any, Any]:
        return self._workflows.get(name) or get_workflow(name)

    def _outcome(self, header: InstanceStatus) -> Any:
        if header.status == Status.COMPLETED:
            try:
                result_type = self._resolve(header.workflow).result_type
            except Exception:
                result_type = None
            return decode(header.output, result_type, what=f"result of {header.workflow!r}")
        cause = header.error.to_exception() if header.error is not None else None
        raise WorkflowFailed(header.instance_id, header.status.value, cause)

    def _post(self, instance_id: str, message: Message) -> None:
        self._check_open()
        check_instance_id(instance_id)
        if not self.store.post(instance_id, message):
            header = self.store.get(instance_id)
            raise InstanceFinishedError(instance_id, header.status if header else "gone")
        self._enqueue(instance_id)

    def _enqueue(self, instance_id: str) -> None:
        with self._cond:
            self._enqueue_locked(instance_id)
            self._cond.notify_all()

    def _enqueue_locked(self, instance_id: str) -> None:
        if instance_id not in self._queued:
            self._queued.add(instance_id)
            self._ready.append(instance_id)

    def _loop(self) -> None:
        while True:
            with self._cond:
                instance_id = self._next_ready()
                if instance_id is None:
                    return
                self._stepping = instance_id
            try:
                self._step(instance_id)
            except BaseException:  # never let the scheduler thread die (even on sys.exit())
                log.exception("scheduler failed on instance %s", instance_id)
                self._retry_later(instance_id)
            finally:
                with self._cond:
                    self._stepping = None
                    self._cond.notify_all()

    def _next_ready(self) -> str | None:
        """Wait (holding the condition) until an instance is ready; None once closed."""
        while not self._closed:
            now = self.clock.now()
            self._expire_deadlines(now)
            while (due := self._next_timer()) is not None and due[0] <= now:
                heapq.heappop(self._timers)
                del self._wake[due[1]]
                self._enqueue_locked(due[1])
            if _monotonic() - self._last_poll >= _POLL_SECONDS:
                self._last_poll = _monotonic()
                try:
                    ready = self.store.ready(now)
                except BaseException:  # a busy or failing store must not end the scheduler thread
                    log.exception("could not poll the store for ready instances")
                    ready = []
                for iid in ready:
                    self._enqueue_locked(iid)
            if _monotonic() - self._last_sweep >= _SWEEP_SECONDS:
                self._last_sweep = _monotonic()
                self._find_orphans(now)
            if self._ready:
                instance_id = self._ready.popleft()
                self._queued.discard(instance_id)
                return instance_id
            wake = self._next_timer()
            if self._can_skip_time() and wake is not None:
                assert isinstance(self.clock, VirtualClock)
                self.clock.advance_to(wake[0])
                continue
            self._cond.wait(self._sleep_seconds(now, wake))
        return None

    def _find_orphans(self, now: datetime) -> None:
        """Mark instances whose outstanding attempts may have been abandoned (holding the lock)."""
        try:
            self._presence.refresh()
            _, died = self._presence.others()
            status = [Status.RUNNING] if not died else [Status.PENDING, Status.RUNNING]
            headers = self.store.list_instances(status=status, limit=1_000_000)
        except BaseException:  # as for ready(): the scheduler thread goes on
            log.exception("could not look for abandoned activity attempts")
            return
        if died:
            log.warning("%d other worker(s) died; adopting their activity attempts", died)
        quiet_since = now - self._orphan_after
        for header in headers:
            iid = header.instance_id
            quiet = header.updated_at <= quiet_since and self._checked.get(iid) != header.version
            if died or quiet:
                self._checked[iid] = header.version
                self._orphans[iid] = None if died else header.version
                self._enqueue_locked(iid)

    def _next_timer(self) -> tuple[datetime, str] | None:
        """The earliest live timer (dropping stale heap entries on the way)."""
        while self._timers:
            at, iid = self._timers[0]
            if self._wake.get(iid) == at:
                return at, iid
            heapq.heappop(self._timers)
        return None

    def _set_wake(self, instance_id: str, at: datetime | None) -> None:
        with self._cond:
            if at is None:
                self._wake.pop(instance_id, None)
            elif self._wake.get(instance_id) != at:
                self._wake[instance_id] = at
                heapq.heappush(self._timers, (at, instance_id))
            self._cond.notify_all()

    def _retry_later(self, instance_id: str) -> None:
        """Step again after a pause of real time (virtual time must not skip over a failing step)."""
        timer = threading.Timer(_ERROR_BACKOFF, self._enqueue, args=(instance_id,))
        timer.daemon = True
        timer.start()

    def _can_skip_time(self) -> bool:
        """Nothing can progress but a timer, and someone is blocked in ``wait``."""
        return (
            self.time_skipping
            and self._waiters > 0
            and not self._attempts
            and not self._ready
            and self._stepping is None
        )

    def _sleep_seconds(self, now: datetime, wake: tuple[datetime, str] | None) -> float:
        times = [wake[0]] if wake is not None else []
        times += [self._deadlines[0][0]] if self._deadlines else []
        if not times:
            return _POLL_SECONDS
        return min(_POLL_SECONDS, max(0.0, (min(times) - now).total_seconds()))

    def _step(self, instance_id: str) -> None:
        loaded: list[int] = []
        started: list[_AttemptKey] = []

        def start_early(decision: Decision) -> None:
            # The commit can only fail on I/O now: start its activities while it is flushed.
            started.extend(key for item in decision.dispatch if (key := self._dispatch(item)))

        with self._cond:
            carried = self._outcomes.pop(instance_id, [])
        try:
            decision = step(
                self.store,
                instance_id,
                self._resolve,
                self.clock.now(),
                on_load=lambda snapshot: loaded.append(snapshot.version),
                live_runs=self._live_runs,
                carried=carried,
                on_ready=start_early,
            )
        except InstanceNotFoundError:
            self._revoke(instance_id, started)
            self._recovering.discard(instance_id)
            self._forget(instance_id)
            self._set_wake(instance_id, None)  # deleted meanwhile: forget it
            return
        except Exception:
            self._hold(instance_id, carried)
            self._revoke(instance_id, started)
            log.exception(
                "step of instance %s failed; retrying in %ss", instance_id, _ERROR_BACKOFF
            )
            self._retry_later(instance_id)
            return
        except BaseException:
            self._hold(instance_id, carried)
            self._revoke(instance_id, started)
            raise
        if decision is not None and not decision.status.is_terminal:
            self._hold(instance_id, carried)  # not taken (a step cut short, STUCK): next time
        self._recovering.discard(instance_id)
        with self._cond:
            adopt = instance_id in self._orphans
            version = self._orphans.pop(instance_id, None)
        if version is not None and loaded[-1:] != [version]:
            adopt = False  # another worker moved it on meanwhile: it is alive and busy with it
        if decision is None or decision.status.is_terminal:
            self._forget(instance_id)
        if decision is None:
            self._set_wake(instance_id, None)
            return
        if decision.status == Status.STUCK and decision.error is not None:
            error = decision.error
            log.error("instance %s is stuck: %s: %s", instance_id, error.type, error.message)
        for listener in list(self._listeners):
            try:
                listener(instance_id, decision)
            except BaseException:  # e.g. SystemExit from a console whose pipe closed
                log.exception("step listener %r failed; it is removed", listener)
                self._listeners.remove(listener)
        # Attempts nobody runs any more (see the class docstring): start them all. Those of
        # ``decision.dispatch`` a commit started (start_early) are skipped by _dispatch.
        work = decision.pending if adopt else decision.dispatch
        for item in work:
            self._dispatch(item)
        self._set_wake(instance_id, decision.wake_at)
        with self._cond:
            if decision.status == Status.STUCK:
                self._stuck[instance_id] = self._stuck.get(instance_id, 0) + 1
            if decision.more or decision.next_run is not None:
                self._enqueue_locked(instance_id)
            for child in decision.children:
                self._enqueue_locked(child.instance_id)
            for outgoing in decision.messages:
                self._enqueue_locked(outgoing.instance_id)
            self._cond.notify_all()

    def _forget(self, instance_id: str) -> None:
        """Drop what adoption remembers of an instance that ended or was deleted."""
        with self._cond:
            self._checked.pop(instance_id, None)
            self._delivered.pop(instance_id, None)
            self._stuck.pop(instance_id, None)
            self._ends += 1
            self._cond.notify_all()

    def _dispatch(self, work: ActivityWork) -> _AttemptKey | None:
        """Start an attempt unless this runtime runs or ran it already; its key if started."""
        key = (work.instance_id, work.run, work.task_id, work.attempt)
        with self._cond:
            delivered = key in self._delivered.get(work.instance_id, ())
            if key in self._attempts or delivered or self._closed:
                return None
            self._attempts[key] = _RUNNING
        try:
            self._pool.submit(self._run_attempt, key, work)
        except RuntimeError:  # the pool shut down: the attempt runs again on restart
            with self._cond:
                self._attempts.pop(key, None)
            return None
        return key

    def _revoke(self, instance_id: str, keys: list[_AttemptKey]) -> None:
        """Disown attempts started for a commit that then failed (nothing of it was written).

        Their outcomes, if in already, are dropped, and a late one is ignored
        (as for a timed-out attempt): the step that schedules them again
        starts them again, at least once as always.
        """
        if not keys:
            return
        revoked = set(keys)
        with self._cond:
            for key in revoked:
                self._attempts.pop(key, None)
                self._delivered.get(instance_id, set()).discard(key)
            held = self._outcomes.pop(instance_id, [])
            kept = [m for m in held if _attempt_key(instance_id, m) not in revoked]
            if kept:
                self._outcomes[instance_id] = kept

    def _run_attempt(self, key: _AttemptKey, work: ActivityWork) -> None:
        if work.timeout is not None:
            # The deadline counts from the start of the attempt, not from its time in the queue.
            with self._cond:
                deadline = self.clock.now() + timedelta(seconds=work.timeout)
                heapq.heappush(self._deadlines, (deadline, key, work))
                self._cond.notify_all()
        result = run_activity(work, self.clock.now)
        with self._cond:
            if self._attempts.get(key) != _RUNNING:
                return  # timed out already: its failure was posted in its place
            self._attempts[key] = _DELIVERING
        self._deliver(key, result)

    def _expire_deadlines(self, now: datetime) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _, key, work = heapq.heappop(self._deadlines)
            if self._attempts.get(key) != _RUNNING:
                continue
            self._attempts[key] = _TIMED_OUT
            error = TimeoutError(f"activity {work.activity!r} ran longer than {work.timeout}s")
            threading.Thread(
                target=self._deliver,
                args=(key, failed_result(work, error, now)),
                name="durable-timeout",
                daemon=True,
            ).start()

    def _post_held(self, held: dict[str, list[Message]]) -> None:
        """Post outcomes no step committed, so that whoever resumes their instances has them.

        Best effort: if the store fails, the rest are dropped and their attempts run again.
        """
        for instance_id, outcomes in held.items():
            for outcome in outcomes:
                try:
                    self.store.post(instance_id, outcome)
                except InstanceNotFoundError:
                    break  # deleted meanwhile: nobody waits for these
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException:  # a store that is gone (or a worker being torn down)
                    log.exception("could not record results for %s on close", instance_id)
                    return

    def _hold(self, instance_id: str, outcomes: list[Message]) -> None:
        """Keep outcomes a step did not commit for the instance's next step (before newer ones)."""
        if outcomes:
            with self._cond:
                outcomes.extend(self._outcomes.pop(instance_id, []))
                self._outcomes[instance_id] = outcomes

    def _deliver(self, key: _AttemptKey, message: ActivityResult) -> None:
        """Hand an attempt's outcome to the instance's next step, which commits it.

        Held in memory, not posted: the step records it with the rest of its
        decision in one commit. A crash before that commit loses it, and the
        attempt runs again, as with a crash during the attempt. Once the
        runtime is closing, outcomes are posted to the store instead.
        """
        instance_id = key[0]
        with self._cond:
            self._attempts.pop(key, None)
            self._delivered.setdefault(instance_id, set()).add(key)
            closed = self._closed
            if not closed:
                self._outcomes.setdefault(instance_id, []).append(message)
                self._enqueue_locked(instance_id)
                self._cond.notify_all()
        if closed:
            self._post_held({instance_id: [message]})


def _attempt_key(instance_id: str, message: Message) -> _AttemptKey | None:
    if isinstance(message, ActivityResult):
        return (instance_id, message.run, message.task_id, message.attempt)
    return None


def run(
    wf: Workflow[Any, R],
    input: Any = None,
    *,
    time_skipping: bool = False,
    store: HistoryStore | str | Path | None = None,
) -> R:
    """Start one instance of ``wf`` and drive it to its end; return its result.

    Raises:
        WorkflowFailed: the instance ended FAILED, CANCELED or TERMINATED.
    """
    with Runtime(store, time_skipping=time_skipping) as runtime:
        instance_id = runtime.start(wf, input)
        result: R = runtime.wait(instance_id)
        return result


_monotonic = time.monotonic
