"""Executors: who computes a stage's work items. In this process, in a local process pool, or on Ray.

A stage hands an executor a compute function, a context shared by all its items (parameters, the
workspace root, the dictionary...) and one small payload per item (ids, paths, rows: never frames).
The executor yields each item's outcome as it completes; the stage (through
:func:`dsbuilder.stages.base.run_items`) writes the cache records and builds the rows in item order,
so the manifests do not depend on which executor ran, nor on the order items finished.

* ``local``: one item after the other, in this process (the default, and what a debugger wants).
* ``process``: a pool of ``jobs`` worker processes on this machine (``spawn``: no inherited threads
  or locks), kept for the whole run: models are loaded once per worker (the stages' loaders are
  cached per process). The context travels with each item (kilobytes: parameters, paths, the
  dictionary's embeddings). At most ``jobs`` items are in flight, so a worker that dies (out of
  memory, a segfault in a native library) is blamed on the items that were running: they are retried
  on a fresh pool, each alone (so an innocent neighbour is not blamed twice), up to ``retries``
  times, then end as ``worker_lost`` rejections (not cached: a later run tries them again).
* ``ray``: Ray tasks over the items. ``ray_address`` None starts a local Ray with ``jobs`` CPUs;
  an address (``ray://host:10001`` or ``auto``) joins a cluster. Ray retries a task whose worker died
  (``max_retries``); workers stay alive between tasks, so models load once per worker. Every worker must
  read the workspace at the same path (a shared file system): payloads carry paths, never pixels.

An exception inside an item's compute does not stop the run: it ends that item as an
``internal_error`` rejection (the traceback goes to the log), except :class:`~dsbuilder.errors.
DsbuilderError` (a stage that cannot run at all, e.g. a missing model), which is raised here.
A :class:`~dsbuilder.errors.Rejected` with ``transient=True`` is retried like a lost worker.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from dsbuilder.errors import DsbuilderError, Rejected, UsageError

log = logging.getLogger(__name__)

EXECUTORS = ("local", "process", "ray")

#: Extra attempts for an item whose worker died or whose failure was transient.
DEFAULT_RETRIES = 2


@dataclass(frozen=True)
class Outcome:
    """One item's end: ``ok`` with ``value`` (what compute returned), or not, with ``reason``
    (``internal_error``, ``worker_lost`` or a transient :class:`Rejected`'s code) and ``detail``."""

    index: int
    ok: bool
    value: Any = None
    reason: str = ""
    detail: str = ""
    attempts: int = 1
    seconds: float | None = None  # compute time of the successful attempt


@dataclass(frozen=True)
class ExecutorConfig:
    """What ``--executor``, ``--jobs`` and ``--ray-address`` (or the recipe's ``run:`` section) say."""

    kind: str = "local"
    jobs: int = 1
    ray_address: str | None = None
    retries: int = DEFAULT_RETRIES

    def __post_init__(self):
        if self.kind not in EXECUTORS:
            raise UsageError(f"unknown executor {self.kind!r}",
                             f"executors are: {', '.join(EXECUTORS)}")
        if self.jobs < 1:
            raise UsageError(f"--jobs must be at least 1, not {self.jobs}", "use --jobs 1 or more")


# --- what runs inside a worker ------------------------------------------------------------------

_IN_WORKER = False  # set in pool and Ray workers


def pin_blas_threads() -> None:
    """BLAS (OpenBLAS, MKL) runs on one thread in every process that computes items: the driver and
    every worker, on any machine. A matrix product's float sums depend on how it is split between
    threads, and the manifests must be the same bytes whichever executor (and node) ran: measured,
    OpenBLAS with 1 thread instead of 2 changes voice distances in the 16th digit. Our products are
    small; one thread costs nothing measurable. Torch sets its threads per model call
    (:mod:`dsbuilder.torch_threads`), for the same reason."""
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # libraries loaded from now on
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")  # libraries already loaded
    except ImportError:  # pragma: no cover - scikit-learn (a dependency) brings it
        pass


def cores() -> int:
    """Cores this process may keep busy with threads of its own (frame decoding, detection running
    ahead): all of them, or its share in a worker (``DSBUILDER_CORES``, set by the executor)."""
    try:
        return max(1, int(os.environ["DSBUILDER_CORES"]))
    except (KeyError, ValueError):
        return os.cpu_count() or 1


def _limit_threads(threads: int) -> None:
    """Set up a worker for its share of the cores: ``threads`` (cores / workers) for FFmpeg's decoder
    threads, detection threads (:func:`cores`) and OpenCV (all give the same results with any count),
    BLAS pinned (:func:`pin_blas_threads`)."""
    global _IN_WORKER
    _IN_WORKER = True
    os.environ["DSBUILDER_CORES"] = str(threads)
    pin_blas_threads()
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:
        pass


class _Relay(logging.Handler):
    """Hands a worker's log record to the logger of the same name in this process."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


def _init_pool_worker(threads: int, log_queue: Any, level: int) -> None:
    _limit_threads(threads)
    root = logging.getLogger("dsbuilder")
    root.handlers[:] = [logging.handlers.QueueHandler(log_queue)]
    root.setLevel(level or logging.INFO)
    root.propagate = False


def _call(fn: Callable[[Any, Any], Any], context: Any, payload: Any) -> tuple[str, Any]:
    """Run one item; never raises: ``("ok", value)``, ``("transient", (reason, detail))``,
    ``("error", detail)`` or ``("raise", exception)`` for a stage that cannot run."""
    if _IN_WORKER:
        _maybe_die()
    try:
        t0 = time.perf_counter()
        value = fn(context, payload)
        return "ok", (value, time.perf_counter() - t0)
    except Rejected as exc:
        if exc.transient:
            return "transient", (exc.reason, exc.detail)
        return "error", f"{type(exc).__name__}: {exc}"
    except DsbuilderError as exc:
        return "raise", exc
    except Exception as exc:  # noqa: BLE001 - one item's bug must not end the run: it is a row
        log.error("item failed:\n%s", traceback.format_exc())
        return "error", f"{type(exc).__name__}: {exc}"


def _maybe_die() -> None:
    """Test hook, workers only: ``DSBUILDER_KILL_WORKER_ONCE=<dir>`` SIGKILLs the first worker to
    start an item (marked by ``<dir>/killed``), as the OOM killer would; the tests show the item is
    retried and the manifests come out the same."""
    marker_dir = os.environ.get("DSBUILDER_KILL_WORKER_ONCE")
    if not marker_dir:
        return
    try:
        fd = os.open(os.path.join(marker_dir, "killed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


# --- executors -----------------------------------------------------------------------------------

class Executor:
    """Runs ``fn(context, payload)`` for every payload; yields :class:`Outcome` s as items end."""

    name = "executor"

    def __init__(self, config: ExecutorConfig):
        self.config = config

    @property
    def jobs(self) -> int:
        return self.config.jobs

    def map(self, fn: Callable[[Any, Any], Any], context: Any,
            payloads: Sequence[Any]) -> Iterator[Outcome]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _outcome(self, index: int, status: str, value: Any, attempts: int) -> Outcome | None:
        """Turn a worker's answer into an Outcome; None means: try the item again."""
        if status == "ok":
            value, seconds = value
            return Outcome(index, True, value, attempts=attempts, seconds=seconds)
        if status == "raise":
            raise value
        if status == "transient":
            if attempts <= self.config.retries:
                log.warning("item %d: %s: %s; retrying", index, *value)
                return None
            return Outcome(index, False, reason=value[0],
                           detail=f"{value[1]} (after {attempts} attempts)", attempts=attempts)
        return Outcome(index, False, reason="internal_error", detail=str(value), attempts=attempts)


class LocalExecutor(Executor):
    name = "local"

    def map(self, fn, context, payloads):
        for i, payload in enumerate(payloads):
            attempts = 0
            while True:
                attempts += 1
                out = self._outcome(i, *_call(fn, context, payload), attempts)
                if out is not None:
                    yield out
                    break


class ProcessExecutor(Executor):
    """A ``spawn`` process pool kept for the whole run (models stay loaded in its workers from one
    stage to the next); at most ``jobs`` items in flight, so that a dead worker is blamed on the items
    that were running, not on queued ones."""

    name = "process"

    def __init__(self, config: ExecutorConfig):
        super().__init__(config)
        self._pool = None

    def _get_pool(self):
        if self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            threads = max(1, (os.cpu_count() or 1) // self.jobs)
            ctx = mp.get_context("spawn")
            # the workers' log records come back here, to this process's handlers (run.log)
            self._log_queue = ctx.Queue()
            self._listener = logging.handlers.QueueListener(self._log_queue, _Relay())
            self._listener.start()
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx,
                                             initializer=_init_pool_worker,
                                             initargs=(threads, self._log_queue,
                                                       logging.getLogger("dsbuilder").level))
        return self._pool

    def _drop_pool(self, broken: bool) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=not broken, cancel_futures=True)
            self._pool = None
            self._listener.stop()

    def close(self) -> None:
        self._drop_pool(broken=False)

    def map(self, fn, context, payloads):
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        pending = list(range(len(payloads)))[::-1]  # a stack: pop() takes the lowest index
        attempts = [0] * len(payloads)
        suspects: set[int] = set()
        while pending:
            pool = self._get_pool()
            running: dict[Any, int] = {}
            broken = False
            while pending or running:
                while pending and not broken and len(running) < self.jobs:
                    i = pending[-1]
                    # an item that was running when a worker died runs alone, so that the next
                    # death is blamed on the right item
                    if i in suspects and running or any(j in suspects for j in running.values()):
                        break
                    try:
                        fut = pool.submit(_call, fn, context, payloads[i])
                    except BrokenProcessPool:  # a worker died since the last wait: this item
                        broken = True          # never ran; it waits for the fresh pool
                        break
                    pending.pop()
                    attempts[i] += 1
                    running[fut] = i
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = running.pop(fut)
                    try:
                        status, value = fut.result()
                    except BrokenProcessPool as exc:
                        broken = True
                        status, value = "lost", str(exc) or "a worker process died"
                    if status == "lost":
                        suspects.add(i)
                        if attempts[i] <= self.config.retries:
                            log.warning("item %d: its worker died; retrying on a new pool", i)
                            pending.append(i)
                        else:
                            yield Outcome(i, False, reason="worker_lost",
                                          detail=f"the worker died {attempts[i]} times running "
                                                 f"it ({value})", attempts=attempts[i])
                        continue
                    out = self._outcome(i, status, value, attempts[i])
                    if out is None:
                        pending.append(i)
                    else:
                        yield out
                if broken and not running:
                    break
            if broken:
                self._drop_pool(broken=True)  # a fresh pool for what is left


class RayExecutor(Executor):
    """Ray tasks, ``jobs`` in flight on a local Ray (or as many as the cluster's CPUs allow)."""

    name = "ray"

    def __init__(self, config: ExecutorConfig):
        super().__init__(config)
        try:
            import ray
        except ImportError:
            raise UsageError("the ray executor needs Ray", 'pip install -e ".[ray]"') from None
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                          configure_logging=False)
            if config.ray_address:
                ray.init(address=config.ray_address, **kwargs)
            else:
                ray.init(num_cpus=config.jobs, **kwargs)
            self._started = True
        self._ray = ray

    @property
    def jobs(self) -> int:
        if self.config.ray_address:
            return max(1, int(self._ray.cluster_resources().get("CPU", 1)))
        return self.config.jobs

    def map(self, fn, context, payloads):
        ray = self._ray
        from ray.exceptions import RayError

        task = ray.remote(num_cpus=1, max_retries=self.config.retries)(_ray_call)
        ctx_ref = ray.put(context)  # sent once; every task gets it by reference
        threads = 1 if self.config.ray_address else max(1, (os.cpu_count() or 1) // self.jobs)
        pending = list(range(len(payloads)))[::-1]
        attempts = [0] * len(payloads)
        running: dict[Any, int] = {}
        while pending or running:
            while pending and len(running) < self.jobs:
                i = pending.pop()
                attempts[i] += 1
                running[task.remote(fn, ctx_ref, payloads[i], threads)] = i
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                i = running.pop(ref)
                try:
                    status, value = ray.get(ref)
                except RayError as exc:  # the worker died more often than max_retries
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    yield Outcome(i, False, reason="worker_lost",
                                  detail=f"{type(exc).__name__}: {first}"[:500],
                                  attempts=attempts[i])
                    continue
                out = self._outcome(i, status, value, attempts[i])
                if out is None:
                    pending.append(i)
                else:
                    yield out

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


def _ray_call(fn, context, payload, threads):
    _limit_threads(threads)
    return _call(fn, context, payload)


def make_executor(config: ExecutorConfig | None = None) -> Executor:
    config = config or ExecutorConfig()
    pin_blas_threads()  # in the driver too: the local executor computes here
    return {"local": LocalExecutor, "process": ProcessExecutor, "ray": RayExecutor}[config.kind](config)
