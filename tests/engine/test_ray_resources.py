"""What an embedded Ray on one machine is asked for: no more logical CPUs than cores, and every actor pool can
still start its first actor beside the tasks (no deadlock on a 2-core machine)."""

from __future__ import annotations

import pytest

from engine.executors.ray_executor import _cpu_requests
from engine.pipeline import load_pipeline


@pytest.mark.parametrize("cores", [1, 2, 16])
def test_actor_pools_fit_the_cores_of_an_embedded_ray(cores):
    pipeline = load_pipeline("demo", check_models=False)  # seven actor-pool stages, asking 1 CPU each
    asked = [s.resources.cpus for s in pipeline.stages]
    got = _cpu_requests(pipeline, float(cores), embedded=True)
    actors = [c for c, s in zip(got, pipeline.stages) if s.stateful]
    tasks = [c for c, s in zip(got, pipeline.stages) if not s.stateful]
    assert len(actors) >= 5 and tasks
    # one actor of every pool, the part writer and the largest task fit at once
    assert sum(actors) + max(tasks) <= cores + 1e-9
    assert all(0 < g <= a for g, a in zip(got, asked))
    assert got == asked or cores < len(actors) + 1  # nothing is shrunk where everything fits


def test_a_cluster_gets_what_the_pipeline_file_asks():
    pipeline = load_pipeline("demo", check_models=False)
    assert _cpu_requests(pipeline, 2.0, embedded=False) == [s.resources.cpus for s in pipeline.stages]
