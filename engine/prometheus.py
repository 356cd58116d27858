"""``vde run --metrics-port N``: the run's per-stage counters, served for Prometheus while the run goes on.

Read from the executor's ``RunMeter`` (engine.metrics) at each scrape, so nothing is counted twice. Under Ray
a stage's counters move when its rows reach the driver. Needs ``prometheus-client`` (``pip install
'vde[metrics]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from engine.errors import UserError
from engine.metrics import RunMeter

MISSING = "--metrics-port needs the prometheus-client package: pip install 'vde[metrics]' (or leave the option out)"


class _StageCollector:
    """Prometheus families made from the meter's live counters, one sample per stage."""

    def __init__(self, meter: RunMeter):
        self.meter = meter

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        live = self.meter.live()
        counters = [("rows_in", "rows handed to the stage"), ("rows_out", "rows the stage returned"),
                    ("busy_seconds", "seconds its workers spent inside the stage"),
                    ("tokens", "tokens the stage generated")]
        for key, doc in counters:
            family = CounterMetricFamily(f"vde_stage_{key}", doc, labels=["stage"])
            for stage, row in live.items():
                family.add_metric([stage], row["busy_s" if key == "busy_seconds" else key])
            yield family
        workers = GaugeMetricFamily("vde_stage_workers", "processes or actors that ran the stage", labels=["stage"])
        queue = GaugeMetricFamily("vde_stage_queue_depth", "rows or blocks waiting at the stage's input (last sample)",
                                  labels=["stage"])
        first = GaugeMetricFamily("vde_stage_first_call_start_seconds",
                                  "unix time its first call began (of the calls whose rows arrived)", labels=["stage"])
        last = GaugeMetricFamily("vde_stage_last_call_end_seconds", "unix time its latest call ended", labels=["stage"])
        for stage, row in live.items():
            workers.add_metric([stage], row["workers"])
            if row["queue_depth"] is not None:
                queue.add_metric([stage], row["queue_depth"])
            if row["first_start"] is not None:
                first.add_metric([stage], row["first_start"])
                last.add_metric([stage], row["last_end"])
        yield from (workers, queue, first, last)


def serve(port: int, meter: RunMeter, addr: str = "0.0.0.0") -> Callable[[], None]:
    """Serve ``meter`` on ``http://addr:port/metrics``; returns the function that stops the server."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        raise UserError(MISSING) from None
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_StageCollector(meter))
    try:
        server, thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise UserError(f"--metrics-port {port}: cannot listen there ({exc.strerror or exc}); pick a free port") from None

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
