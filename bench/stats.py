"""Latency summaries shared by every bench scenario."""

import statistics
from typing import Any


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(latencies_ms: list[float], seconds: float, errors: int = 0, dropped: int = 0) -> dict[str, Any]:
    return {
        "count": len(latencies_ms),
        "throughput_per_s": round(len(latencies_ms) / seconds, 2) if seconds > 0 else 0.0,
        "p50_ms": round(percentile(latencies_ms, 50), 3),
        "p95_ms": round(percentile(latencies_ms, 95), 3),
        "p99_ms": round(percentile(latencies_ms, 99), 3),
        "mean_ms": round(statistics.fmean(latencies_ms), 3) if latencies_ms else float("nan"),
        "errors": errors,
        "dropped": dropped,
        "seconds": round(seconds, 3),
    }
