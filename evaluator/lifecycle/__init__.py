"""The data lifecycle: sampled text deleted past its class's retention (``_retention``), and
PostgreSQL's day partitions of decisions and outcomes created ahead and dropped past the
retention setting (``_partitions``); their scheduled jobs in ``tasks``."""

from evaluator.lifecycle._partitions import (
    PartitionRun,
    create_day_partition,
    day_partitions,
    maintain_partitions,
)
from evaluator.lifecycle._retention import TextRetentionRun, delete_expired_text
from evaluator.lifecycle.tasks import lifecycle_jobs

__all__ = [
    "PartitionRun",
    "TextRetentionRun",
    "create_day_partition",
    "day_partitions",
    "delete_expired_text",
    "lifecycle_jobs",
    "maintain_partitions",
]
