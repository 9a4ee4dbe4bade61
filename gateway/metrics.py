"""Prometheus metrics of one gateway app (its own registry, so tests can build many apps)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "expr_result_latency_seconds",
            "End-to-end latency from accepting a message to sending its result",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.results = Counter("expr_results_total", "Results sent to clients", ["type"], registry=self.registry)
        self.errors = Counter("expr_errors_total", "Typed errors sent to clients", ["code"], registry=self.registry)
        self.accepted = Counter(
            "expr_accepted_total", "Messages accepted onto a task stream", ["kind"], registry=self.registry
        )
        self.connections = Gauge(
            "expr_connections", "Open WebSocket and event-stream connections", ["endpoint"], registry=self.registry
        )
        self.backlog = Gauge(
            "expr_queue_backlog", "Entries waiting or in progress per task stream", ["kind"], registry=self.registry
        )
        self.dead_letters = Gauge(
            "expr_dead_letters", "Entries in each dead-letter stream", ["kind"], registry=self.registry
        )
        self.workers = Gauge("expr_workers_alive", "Workers with a recent heartbeat", ["kind"], registry=self.registry)
