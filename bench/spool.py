"""Spool benchmark: what keeping one acknowledged row on local disk costs during an outage.

Prints, per row, for a decision row as ``Router.route`` builds it:
  1. encoding only (``Spool.encode``: the JSON line, no I/O) — the baseline,
  2. one row per append (``Spool.append``: write + fsync), as one request at a time sees it,
  3. groups of 32 rows per append, as the writer's group commit sees 32 concurrent requests,
and each as a ratio to the baseline measured in the same run. Timings depend on the disk's
fsync latency far more than on the CPU.

Run: ``python bench/spool.py [--rows N] [--json PATH]``; the spool lives in a temp folder.

``--json PATH`` writes ``{"bench": "spool", "rows": int, "encode_us_per_row": float,
"append_1_us_per_row": float, "append_32_us_per_row": float, "ratio_append_1": float,
"ratio_append_32": float}``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from router.models import Decision, Outcome, Sample
from router.spool import Batch, Spool


def decision_row(i: int) -> dict[str, Any]:
    return {
        "id": f"{i:032x}",
        "task_type": "classify",
        "task_class": "classify",
        "tier": "cheap",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "table_version": 3,
        "sampled": i % 10 == 0,
        "input_tokens": 120,
        "has_tool_calls": False,
        "meta": {"team": "search"},
        "item_id": None,
        "caller": None,
        "shadow": False,
        "created_at": datetime.now(UTC),
    }


def per_row_us(spool: Spool, rows: int, group: int) -> float:
    batches: list[Batch] = [
        [(Decision, decision_row(i + j)) for j in range(group)] for i in range(0, rows, group)
    ]
    start = time.perf_counter()
    for batch in batches:
        spool.append(batch)
    return (time.perf_counter() - start) / (len(batches) * group) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(Path(tmp), [Decision, Outcome, Sample], max_bytes=1 << 34)
        rows = [(Decision, decision_row(i)) for i in range(args.rows)]
        start = time.perf_counter()
        for item in rows:
            spool.encode([item])
        encode = (time.perf_counter() - start) / args.rows * 1e6
        one = per_row_us(spool, args.rows, 1)
        grouped = per_row_us(spool, args.rows * 4, 32)
        spool.close()
    figures = {
        "bench": "spool",
        "rows": args.rows,
        "encode_us_per_row": round(encode, 2),
        "append_1_us_per_row": round(one, 2),
        "append_32_us_per_row": round(grouped, 2),
        "ratio_append_1": round(one / encode, 1),
        "ratio_append_32": round(grouped / encode, 1),
    }
    print(f"encode only        {encode:9.2f} us/row   (baseline)")
    print(f"append 1 + fsync   {one:9.2f} us/row   {one / encode:7.1f}x")
    print(f"append 32 + fsync  {grouped:9.2f} us/row   {grouped / encode:7.1f}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
