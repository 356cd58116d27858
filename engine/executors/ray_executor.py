"""Run a pipeline on Ray Data: the only file in vde that imports Ray.

Each stage becomes one ``map_batches`` operator over Arrow batches: stages with a ``setup()`` or GPUs run
as actor pools (models load once per actor, on the first row it must compute; ``teardown()`` when Ray Data
releases the actor), the others as tasks. Ray Data retries failed tasks and restarts dead actors, and every
stage stores what it computed (engine.results), so a killed worker costs time, not rows. Finished rows
stream back to the driver. With no address
an embedded local Ray starts; ``address`` joins a running cluster (``ray start --head`` on one node,
``ray start --address HEAD:6379`` on the others).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from engine.metrics import RunMeter, metered, stamp
from engine.pipeline import Pipeline
from engine.stage import EnvironmentFault, RunContext, Stage, teardown_if_set_up

log = logging.getLogger(__name__)

def _cap_threads(cpus: float) -> None:
    """OpenCV's thread pool as wide as the CPUs the worker asked for. Its default is one thread per core of the
    node in every worker process, so a dozen score tasks on 16 cores would run 192 threads. OpenCV's results
    do not depend on its thread count, so a Ray run stays byte-identical to a local one."""
    import cv2

    cv2.setNumThreads(max(1, round(cpus)))


class _StageWorker:
    """One actor of a stateful stage: set up once, then called per batch."""

    def __init__(self, stage: Stage, ctx: RunContext, schema: dict, index: int, cpus: float):
        self.stage, self.ctx, self.schema, self.index = stage, ctx, schema, index
        _cap_threads(cpus)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return stamp(*metered(self.stage, batch, self.ctx, self.schema, self.index))

    def __del__(self) -> None:  # Ray Data drops the UDF when it shuts the actor down gracefully
        teardown_if_set_up(self.stage, self.ctx)


def _stateless(stage: Stage, ctx: RunContext, schema: dict, index: int,
               cpus: float) -> Callable[[pa.Table], pa.Table]:
    def apply(batch: pa.Table) -> pa.Table:
        _cap_threads(cpus)  # a task worker process runs tasks of any stage: set it per call (cheap)
        return stamp(*metered(stage, batch, ctx, schema, index))

    apply.__name__ = stage.name
    return apply


def _environment_fault(exc: BaseException) -> EnvironmentFault | None:
    """The EnvironmentFault a worker raised, through Ray's wrappers (RayTaskError.cause, chained exceptions)."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, EnvironmentFault) and hasattr(e, "cause") and hasattr(e, "stage"):
            return e
        todo += [getattr(e, "cause", None) if isinstance(getattr(e, "cause", None), BaseException) else None,
                 e.__cause__, e.__context__]
    return None


# On the embedded Ray of one machine the actor pools together hold at most this share of the logical CPUs, so
# tasks (split, score, filter: the CPU-bound stages) keep the rest, and Ray Data's repartition task, which
# always asks one whole CPU, finds it free.
POOL_SHARE_OF_CORES = 0.25


@dataclass(frozen=True)
class Placement:
    """What one stage's workers ask Ray for: CPUs per worker and the most actors of its pool (None: as many as
    the resources allow; tasks have no pool). ``rebatch``: re-block this stage's output into blocks of the
    next stage's batch, after a splitter (it emits all clips of a video as one block, which one worker would
    then score in turn) and before a stage of smaller batches."""

    cpus: float
    max_actors: int | None
    rebatch: int | None


def _placements(pipeline: Pipeline, cpus: float, gpus: float, embedded: bool) -> list[Placement]:
    """On a cluster: what the pipeline file says, and outputs re-blocked as ``Placement`` says. On the embedded Ray
    of one machine (logical CPUs = cores) a pool's actors stay resident and an autoscaling pool grows into
    every free CPU, so Ray Data could never schedule the repartition task or a task of a CPU stage again (a
    hang, not an error). So there: a CPU-only pool has ``workers`` actors (default 1); a GPU pool as many as
    the GPUs allow; where everything asked does not fit, the pools share ``POOL_SHARE_OF_CORES`` of the cores
    equally (fractions allowed: logical CPUs only gate scheduling, the threads still run), tasks share the
    rest (about one per core), and output is re-blocked only where a whole CPU stays free for it."""
    stages = pipeline.stages
    # Ray Data fuses consecutive task stages into one operator whose bundles are the larger batch: a probe
    # batch of 16 videos would then be split one video after another in one task. Re-blocking in between keeps
    # each stage's own batch (and breaks that fusion).
    rebatch = [stages[i + 1].batch_size if i + 1 < len(stages) and (stage.fan_out or
                                                                    stages[i + 1].batch_size < stage.batch_size)
               else None for i, stage in enumerate(stages)]
    if not embedded:
        return [Placement(stage.resources.cpus, (stage.workers or None) if stage.stateful else None, r)
                for stage, r in zip(stages, rebatch)]
    most = [(stage.workers or (max(1, int(gpus // stage.resources.gpus)) if stage.resources.gpus else 1))
            if stage.stateful else 0 for stage in stages]
    asked = [stage.resources.cpus for stage in stages]
    pools = [i for i, stage in enumerate(stages) if stage.stateful]
    tasks = [i for i, stage in enumerate(stages) if not stage.stateful]
    pool_cpus = sum(asked[i] * most[i] for i in pools)
    widest_task = max((asked[i] for i in tasks), default=0.0)
    if pool_cpus + max(widest_task, 1.0 if any(rebatch) else 0.0) > cpus and pools:
        share = cpus * POOL_SHARE_OF_CORES / len(pools)
        asked = [min(a, share / most[i]) if i in pools else a for i, a in enumerate(asked)]
        pool_cpus = sum(asked[i] * most[i] for i in pools)
    free = cpus - pool_cpus
    task_cpus = free / max(1, round(free))  # about one task per free core (1.5 free CPUs: two tasks of 0.75)
    return [Placement(asked[i] if stage.stateful else min(asked[i], task_cpus), most[i] if stage.stateful else None,
                      rebatch[i] if free >= 1.0 else None)
            for i, stage in enumerate(stages)]


QUEUE_SAMPLE_S = 0.05  # at most one queue-depth sample per operator this often


class _DriverOnly:
    """Holds the meter for the callback below. Ray Data ships its context (callback classes included) to the
    workers: there the reference arrives empty instead of copying the meter (and its lock) along."""

    def __init__(self, meter: RunMeter | None):
        self.meter = meter

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return _DriverOnly, (None,)


def _queue_sampler(data_ctx, meter: RunMeter, stages: list[str]) -> type | None:
    """Registers an execution callback that samples the blocks queued at each operator's input into
    ``meter``; returns its class (to unregister), or None where this Ray Data has no such hook. An operator
    that Ray Data fused from several stages ("MapBatches(a)->MapBatches(b)") shows the queue of its first."""
    try:
        from ray.data._internal.execution.execution_callback import ExecutionCallback
    except ImportError:
        return None
    last, ref = [0.0], _DriverOnly(meter)

    def on_execution_step(self, executor) -> None:  # noqa: ANN001 - Ray Data's StreamingExecutor
        now, meter = time.monotonic(), ref.meter
        if meter is None or now - last[0] < QUEUE_SAMPLE_S:
            return
        last[0] = now
        try:
            position = 0
            for op, state in executor._topology.items():
                fused = op.name.count("MapBatches(")  # 0: the input buffer or a repartition, not a stage
                if not fused:
                    continue
                if position < len(stages) and not op.has_execution_finished():
                    meter.queue(stages[position], state.total_enqueued_input_blocks(), "blocks")
                position += fused
        except Exception:  # noqa: BLE001 - Ray Data internals changed: no queue depths, the run goes on
            log.debug("no queue depths from Ray Data", exc_info=True)

    sampler = type("QueueSampler", (ExecutionCallback,), {"on_execution_step": on_execution_step})
    data_ctx.custom_execution_callback_classes.append(sampler)
    return sampler


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, progress: bool = True):
        self.address = address  # None: start an embedded local Ray; "auto" or "HOST:PORT": join a cluster
        self.num_cpus = num_cpus  # logical CPUs of the embedded Ray (default: this machine's cores)
        self.progress = progress
        self.metrics = RunMeter()  # what each stage did (engine.metrics); the run clears it when it starts

    def _init(self) -> None:
        import ray

        if ray.is_initialized():
            return
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local run needs no token file
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
                                    "RAY_AUTH_MODE": "disabled"}}
        if self.address:
            ray.init(address=self.address, runtime_env=runtime_env, log_to_driver=False)
        else:
            # No more logical CPUs than cores: oversubscribing only makes workers fight for them. Actor pools
            # stay schedulable because ``_placements`` shrinks their requests to fit (fractional CPUs).
            # Ray's C++ core worker prints advice as error lines on the terminal (an actor's constructor arguments
            # in the object store, which Ray Data does for every pool); real failures still raise in Python.
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
            ray.init(num_cpus=self.num_cpus or os.cpu_count() or 1, include_dashboard=False, runtime_env=runtime_env,
                     log_to_driver=False, logging_level=logging.ERROR)

    def run(self, pipeline: Pipeline, videos: pa.Table, ctx: RunContext, sink: Callable[[pa.Table], None]) -> None:
        import ray

        self._init()
        data_ctx = ray.data.DataContext.get_current()
        data_ctx.enable_progress_bars = self.progress
        if not self.progress:  # Ray Data says, as a warning, that its bars are off: that is what was asked
            logging.getLogger("ray.data").setLevel(logging.ERROR)
        data_ctx.max_errored_blocks = 0
        self.metrics.expect([stage.name for stage in pipeline.stages])
        # before the dataset exists: it keeps a copy of the context it was made in
        sampler = _queue_sampler(data_ctx, self.metrics, [stage.name for stage in pipeline.stages])
        try:
            self._execute(pipeline, videos, ctx, sink)
        finally:
            if sampler is not None:
                data_ctx.custom_execution_callback_classes.remove(sampler)

    def _execute(self, pipeline: Pipeline, videos: pa.Table, ctx: RunContext, sink: Callable[[pa.Table], None]) -> None:
        import ray

        n_blocks = max(1, min(videos.num_rows, 64))
        step = -(-videos.num_rows // n_blocks)
        blocks = [videos.slice(i, step) for i in range(0, videos.num_rows, step)]
        ds = ray.data.from_arrow(blocks)
        resources = ray.cluster_resources()
        placements = _placements(pipeline, resources.get("CPU", 1.0), resources.get("GPU", 0.0),
                                 embedded=not self.address)
        for index, (stage, placement) in enumerate(zip(pipeline.stages, placements)):
            schema = pipeline.schema_after(index)
            common = dict(batch_size=stage.batch_size, batch_format="pyarrow", zero_copy_batch=True,
                          num_cpus=placement.cpus, num_gpus=stage.resources.gpus or None)
            if stage.resources.memory_gb:
                common["memory"] = int(stage.resources.memory_gb * 2**30)
            if stage.stateful:
                pool = ray.data.ActorPoolStrategy(min_size=1, max_size=placement.max_actors)
                ds = ds.map_batches(_StageWorker, fn_constructor_args=(stage, ctx, schema, index, placement.cpus),
                                    compute=pool, **common)
            else:
                ds = ds.map_batches(_stateless(stage, ctx, schema, index, placement.cpus), **common)
            if placement.rebatch:
                ds = ds.repartition(target_num_rows_per_block=placement.rebatch)
        rows = 0
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                sink(self.metrics.take_spans(batch))  # the spans the workers stamped on the rows
                rows += batch.num_rows
        except Exception as exc:
            fault = _environment_fault(exc)
            if fault is None:
                raise
            raise EnvironmentFault(fault.stage, fault.cause) from None  # one clear message, not Ray's traceback
        log.info("ray: %d rows", rows)

    def shutdown(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
