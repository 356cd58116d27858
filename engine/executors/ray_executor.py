"""Run a pipeline on Ray Data: the only file in vde that imports Ray.

Each stage becomes one ``map_batches`` operator over Arrow batches: stages with a ``setup()`` or GPUs run
as actor pools (models load once per actor), the others as tasks. Ray Data retries failed tasks and restarts dead
actors, and parts are content-named, so a killed worker costs time, not rows. With no address
an embedded local Ray starts; ``address`` joins a running cluster (``ray start --head`` on one node,
``ray start --address HEAD:6379`` on the others).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import pyarrow as pa

from engine.pipeline import Pipeline
from engine.stage import EnvironmentFault, RunContext, Stage, run_stage

log = logging.getLogger(__name__)


class _StageWorker:
    """One actor of a stateful stage: set up once, then called per batch."""

    def __init__(self, stage: Stage, ctx: RunContext, schema: dict):

        self.stage, self.ctx, self.schema = stage, ctx, schema
        stage.setup(ctx)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return run_stage(self.stage, batch, self.ctx, self.schema)


class _PartWriter:
    def __init__(self, sink: Callable[[pa.Table], str]):
        self.sink = sink

    def __call__(self, batch: pa.Table) -> pa.Table:
        path = self.sink(batch)
        return pa.table({"part": [path], "rows": [batch.num_rows]})


def _stateless(stage: Stage, ctx: RunContext, schema: dict) -> Callable[[pa.Table], pa.Table]:
    def apply(batch: pa.Table) -> pa.Table:
        return run_stage(stage, batch, ctx, schema)

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


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, progress: bool = True):
        self.address = address  # None: start an embedded local Ray; "auto" or "HOST:PORT": join a cluster
        self.num_cpus = num_cpus  # logical CPUs of the embedded Ray (default: max(4, cores))
        self.progress = progress

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
            # More logical CPUs than cores: every actor-pool stage holds one, and tasks need room beside them.
            cpus = self.num_cpus or max(4, os.cpu_count() or 1)
            ray.init(num_cpus=cpus, include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)

    def run(self, pipeline: Pipeline, videos: pa.Table, ctx: RunContext, sink: Callable[[pa.Table], str]) -> None:
        import ray

        self._init()
        data_ctx = ray.data.DataContext.get_current()
        data_ctx.enable_progress_bars = self.progress
        data_ctx.max_errored_blocks = 0
        n_blocks = max(1, min(videos.num_rows, 64))
        step = -(-videos.num_rows // n_blocks)
        blocks = [videos.slice(i, step) for i in range(0, videos.num_rows, step)]
        ds = ray.data.from_arrow(blocks)
        for index, stage in enumerate(pipeline.stages):
            schema = pipeline.schema_after(index)
            common = dict(batch_size=stage.batch_size, batch_format="pyarrow", zero_copy_batch=True,
                          num_cpus=stage.resources.cpus, num_gpus=stage.resources.gpus or None)
            if stage.resources.memory_gb:
                common["memory"] = int(stage.resources.memory_gb * 2**30)
            if stage.stateful:
                pool = ray.data.ActorPoolStrategy(min_size=1, max_size=stage.workers or None)
                ds = ds.map_batches(_StageWorker, fn_constructor_args=(stage, ctx, schema), compute=pool, **common)
            else:
                ds = ds.map_batches(_stateless(stage, ctx, schema), **common)
        ds = ds.map_batches(_PartWriter, fn_constructor_args=(sink,), batch_size=None, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2), num_cpus=0.25)
        rows = 0
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                rows += sum(batch.column("rows").to_pylist())
        except Exception as exc:
            fault = _environment_fault(exc)
            if fault is None:
                raise
            raise EnvironmentFault(fault.stage, fault.cause) from None  # one clear message, not Ray's traceback
        log.info("ray: %d rows written", rows)

    def shutdown(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
