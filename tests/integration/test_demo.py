"""The demo command: enqueues, handles everything, prints the worker's status."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid

from vermilion._cli._demo import run_demo
from vermilion._cli._format import format_table


async def test_demo_handles_every_message(redis_url: str) -> None:
    """run_demo finishes every added message and reports retries, failures and duplicates."""
    out = io.StringIO()
    name = f"test-demo-{uuid.uuid4().hex[:8]}"
    status = await run_demo(redis_url, messages=600, concurrency=20, queue_name=name, out=out)
    counts = status.stats.counts
    text = out.getvalue()
    assert "refused as duplicates" in text
    assert counts["handler/success"] + counts["handler/error"] == 570  # 600 less 30 duplicates
    assert counts.get("handler/retry", 0) > 0
    assert "handling time (ms)" in text and "p99" in text
    assert status.queue_status is not None and status.queue_status.nqueued == 0


def test_demo_command_line(redis_url: str) -> None:
    """`python -m vermilion demo --url ...` exits 0 and prints the status table."""
    name = f"test-demo-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [sys.executable, "-m", "vermilion", "demo", "--url", redis_url, "--messages", "300", "--queue", name],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "worker on queue" in result.stdout
    assert "handler/success" in result.stdout


def test_bad_url_prints_one_line_and_fails() -> None:
    """An unreachable server gives a one-line error and a non-zero exit, no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "vermilion", "demo", "--url", "redis://127.0.0.1:1/0", "--messages", "10"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("vermilion:")


def test_format_table_aligns_numbers_right() -> None:
    """Numbers are right-aligned with thousands separators; text left-aligned."""
    table = format_table(["name", "n"], [["a", 1234], ["bbb", 5]])
    assert table.splitlines() == ["name      n", "----  -----", "a     1,234", "bbb       5"]
