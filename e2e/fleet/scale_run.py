"""The e2e autoscaling run's manifest and traffic (e2e/test_autoscaling.py), shared with
the check that its ramp keeps the sim-to-real tolerance (tests/test_sim_to_real.py)."""

from __future__ import annotations

from typing import Any

TARGET_QUEUE = 8
PER_REPLICA_RPS = 80.0  # 8 rows per (60 + 8 x 5) ms batch
MIN, MAX = 1, 4
SPEC: dict[str, Any] = {
    "model": {
        "name": "synthetic",
        "source": "builtin://synthetic",
        "parameters": {"baseMs": "60", "perItemMs": "5", "width": "16"},
    },
    "engine": {"device": "cpu"},
    "batching": {"maxBatchSize": 8, "maxQueueDelayMicroseconds": 5000, "maxQueueSize": 4000},
    "autoscaling": {
        "enabled": True,
        "policy": "predictive",
        "minReplicas": MIN,
        "maxReplicas": MAX,
        "targetQueueDepthPerReplica": TARGET_QUEUE,
        "intervalSeconds": 2,
        "scaleDownStabilizationSeconds": 10,
        "predictive": {"capacityPerReplica": 80},
    },
    "terminationGracePeriodSeconds": 20,
}
# req/s over time: idle trickle, a 30 s ramp to 90 req/s (past one replica's 80: the
# first scale-up must come before it), then to 200 in 10 s (~2.5 replicas' worth), hold,
# stop. Steep where the 2 -> 3 and 3 -> 4 thresholds lie (112 and 168 req/s at capacity
# 80 x 0.7): a gap in time between the live run and its replay is a gap in rate divided
# by the ramp's slope, and at 11 req/s per second the few req/s the two sides differ by
# near saturation stay inside one decision (tests/test_sim_to_real.py replays it with a
# slower live replica). The 70 s ramp to 200 before (2.7 req/s per second) let them
# reach two decisions in 1 of 14 live runs.
RAMP = [(0, 10), (10, 10), (40, 90), (50, 200), (70, 200), (75, 0)]
