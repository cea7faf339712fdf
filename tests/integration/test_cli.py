"""The ``vermilion`` command line, run as a subprocess against the test server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import QueueFactory
from tests.helpers import ack, eventually, lease_one
from vermilion import JsonSerializer, MessageStatus, Queue, QueueStatus

UNREACHABLE = "redis://127.0.0.1:1/0"


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


async def vermilion(
    *args: str,
    url: str | None,
    stdin: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Run:
    """Run ``python -m vermilion ARGS [--url URL]`` and wait for it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vermilion",
        *args,
        *(["--url", url] if url else []),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=env or os.environ.copy(),
    )
    out, err = await asyncio.wait_for(process.communicate(None if stdin is None else stdin.encode()), 30)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def assert_one_line_error(run: Run, exit_code: int, *fragments: str) -> None:
    """The command failed with ``exit_code`` and said why in one ``vermilion: ...`` line."""
    assert run.returncode == exit_code, run
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vermilion: "), run.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def table_rows(text: str) -> dict[str, list[str]]:
    """A ``format_table`` table as ``{first cell: other cells}``, header included."""
    lines = text.splitlines()
    assert set(lines[1]) <= {"-", " "}, text
    return {cells[0]: cells[1:] for cells in (line.split() for line in [lines[0], *lines[2:]])}


# -- status, queues ----------------------------------------------------------------


async def test_status_table_and_json(make_queue: QueueFactory, redis_url: str) -> None:
    """`status A B` prints one row per queue; --json the same counts; no name lists every queue."""
    a, b = await make_queue(), await make_queue()
    await a.enqueue_many([{"n": 1}, {"n": 2}, {"n": 3}])
    await a.enqueue({"n": 4}, delay=60)
    await lease_one(a)
    await b.enqueue("x")

    run = await vermilion("status", a.name, b.name, url=redis_url)
    assert run.returncode == 0, run
    rows = table_rows(run.stdout)
    assert rows["queue"] == [
        "queued",
        "locked",
        "backoff",
        "done",
        "failed",
        "dropped",
        "total",
        "lag",
        "(s)",
        "max",
        "size",
    ]
    assert rows[a.name][:7] == ["2", "1", "1", "0", "0", "0", "4"]
    assert rows[b.name][:7] == ["1", "0", "0", "0", "0", "0", "1"]

    run = await vermilion("status", b.name, a.name, "--json", url=redis_url)
    assert run.returncode == 0, run
    data = json.loads(run.stdout)
    assert [row["queue"] for row in data] == [b.name, a.name]
    assert {key: value for key, value in data[1].items() if key != "lag"} == {
        "queue": a.name,
        "nqueued": 2,
        "nlocked": 1,
        "nbackoff": 1,
        "ndone": 0,
        "nfailed": 0,
        "nfailed_dropped": 0,
        "ntotal": 4,
        "max_size": None,
    }
    assert isinstance(data[1]["lag"], float) and data[1]["lag"] >= 0

    everything = await vermilion("status", "--json", url=redis_url)
    assert {a.name, b.name} <= {row["queue"] for row in json.loads(everything.stdout)}


async def test_status_of_every_queue_skips_keys_of_no_queue(
    make_queue: QueueFactory, redis_url: str, stray_keys: list[bytes]
) -> None:
    """A stray `vermilion:{has space}:x` key made `status` fail for every queue; now it is
    skipped, with a warning on stderr, and every real queue is listed."""
    queue = await make_queue()
    await queue.enqueue("x")
    run = await vermilion("status", "--json", url=redis_url)
    assert run.returncode == 0, run
    assert queue.name in {row["queue"] for row in json.loads(run.stdout)}
    assert "has space" in run.stderr


async def test_url_defaults_to_the_environment(make_queue: QueueFactory, redis_url: str) -> None:
    """Without --url, $VERMILION_URL is the server."""
    queue = await make_queue()
    await queue.enqueue("x")
    run = await vermilion(
        "status", queue.name, "--json", url=None, env={**os.environ, "VERMILION_URL": redis_url}
    )
    assert run.returncode == 0, run
    assert json.loads(run.stdout)[0]["nqueued"] == 1


async def test_queues_with_pattern(make_queue: QueueFactory, redis_url: str) -> None:
    """`queues --pattern` lists matching names, sorted, one a line; --json as a list."""
    prefix = f"test-cli-{os.getpid()}-{time.monotonic_ns()}"
    names = [f"{prefix}-b", f"{prefix}-a"]
    for name in names:
        await (await make_queue(name)).enqueue("x")

    run = await vermilion("queues", "--pattern", f"{prefix}-*", url=redis_url)
    assert run.returncode == 0, run
    assert run.stdout.splitlines() == sorted(names)
    run = await vermilion("queues", "--pattern", f"{prefix}-*", "--json", url=redis_url)
    assert json.loads(run.stdout) == sorted(names)
    run = await vermilion("queues", "--pattern", f"{prefix}-none*", "--json", url=redis_url)
    assert json.loads(run.stdout) == []


# -- enqueue, message-status ------------------------------------------------------------


async def test_mids_that_start_with_a_dash(queue: Queue, redis_url: str) -> None:
    """Such a mid is given with `--mid=` and, as a positional, after `--` (options first)."""
    run = await vermilion("enqueue", queue.name, '{"fail": "no"}', "--mid=-dash", url=redis_url)
    assert (run.returncode, run.stdout) == (0, "added -dash\n"), run
    run = await vermilion("--url", redis_url, "message-status", queue.name, "--", "-dash", url=None)
    assert (run.returncode, run.stdout) == (0, "queued\n"), run
    run = await vermilion("--url", redis_url, "replay", queue.name, "--", "-dash", url=None)
    assert (run.returncode, run.stdout) == (3, "not replayed -dash: live\n"), run


async def test_enqueue_added_updated_refused(queue: Queue, redis_url: str) -> None:
    """Exit code 0 for added/updated, 3 for refused; --json prints the EnqueueResult."""
    run = await vermilion("enqueue", queue.name, '{"to": "ada"}', "--mid", "m1", url=redis_url)
    assert (run.returncode, run.stdout) == (0, "added m1\n"), run
    run = await vermilion("enqueue", queue.name, '{"to": "bob"}', "--mid", "m1", url=redis_url)
    assert (run.returncode, run.stdout) == (3, "refused m1: already-queued\n"), run
    run = await vermilion(
        "enqueue", queue.name, '{"to": "eve"}', "--mid", "m1", "--can-update", "--json", url=redis_url
    )
    assert run.returncode == 0, run
    assert json.loads(run.stdout) == {"ok": True, "mid": "m1", "action": "updated", "error": None}
    (info,) = await queue.content()
    assert info.content == {"to": "eve"}

    run = await vermilion("enqueue", queue.name, "[1, 2]", "--delay", "60", "--json", url=redis_url)
    mid = json.loads(run.stdout)["mid"]  # a random UUID
    assert await queue.message_status(mid) == MessageStatus.QUEUED_WITH_BACKOFF
    run = await vermilion("enqueue", queue.name, "0", "--mid", mid, "--reset-delay", url=redis_url)
    assert run.stdout == f"updated {mid}\n"
    assert await queue.message_status(mid) == MessageStatus.QUEUED


async def test_enqueue_options_reach_the_queue(queue: Queue, redis_url: str) -> None:
    """--lock-timeout sets the message's lease, --can-requeue requeues a locked mid, - reads stdin."""
    run = await vermilion(
        "enqueue", queue.name, "-", "--mid", "m", "--lock-timeout", "5", url=redis_url, stdin='{"a": 1}'
    )
    assert run.stdout == "added m\n", run
    leased = await lease_one(queue)
    assert leased.lock_ms == 5000
    run = await vermilion("enqueue", queue.name, '{"a": 2}', "--mid", "m", url=redis_url)
    assert (run.returncode, run.stdout) == (3, "refused m: locked\n")
    run = await vermilion("enqueue", queue.name, '{"a": 2}', "--mid", "m", "--can-requeue", url=redis_url)
    assert (run.returncode, run.stdout) == (0, "added m\n")
    assert await queue.message_status("m") == MessageStatus.LOCKED_WITH_REQUEUE


@pytest.mark.parametrize(
    ("content", "fragment"),
    [('{"a": 1', "not valid JSON"), ("NaN", "NaN is not valid JSON"), ("", "not valid JSON")],
    ids=["truncated", "nan", "empty"],
)
async def test_enqueue_bad_json(queue: Queue, redis_url: str, content: str, fragment: str) -> None:
    """Bad JSON: one line, exit code 2, nothing enqueued."""
    run = await vermilion("enqueue", queue.name, content, url=redis_url)
    assert_one_line_error(run, 2, fragment)
    assert (await queue.status()).ntotal == 0


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("--delay", "-1", "non-negative"),
        ("--delay", "soon", "not a number of seconds"),
        ("--delay", "nan", "finite"),
        ("--lock-timeout", "0", "more than 0"),
    ],
)
async def test_enqueue_bad_durations(
    queue: Queue, redis_url: str, option: str, value: str, fragment: str
) -> None:
    """A bad duration is refused by the parser in one line, exit code 2."""
    run = await vermilion("enqueue", queue.name, "1", option, value, url=redis_url)
    assert_one_line_error(run, 2, option, fragment)
    assert (await queue.status()).ntotal == 0


async def test_message_status(queue: Queue, redis_url: str) -> None:
    """The status of a known mid, 'unknown' for another: exit code 0 both."""
    await queue.enqueue("x", mid="known")
    run = await vermilion("message-status", queue.name, "known", url=redis_url)
    assert (run.returncode, run.stdout) == (0, "queued\n"), run
    run = await vermilion("message-status", queue.name, "never", url=redis_url)
    assert (run.returncode, run.stdout) == (0, "unknown\n"), run
    run = await vermilion("message-status", queue.name, "never", "--json", url=redis_url)
    assert json.loads(run.stdout) == {"queue": queue.name, "mid": "never", "status": None}


# -- clear ---------------------------------------------------------------------------


async def test_clear_needs_yes(make_queue: QueueFactory, redis_url: str) -> None:
    """Without --yes nothing is deleted; with it, every named queue is, and the count printed."""
    a, b = await make_queue(), await make_queue()
    await a.enqueue_many(["x", "y"])
    await b.enqueue("z")
    run = await vermilion("clear", a.name, b.name, url=redis_url)
    assert_one_line_error(run, 2, "--yes")
    assert (await a.status()).ntotal == 2

    run = await vermilion("clear", a.name, b.name, "--yes", url=redis_url)
    assert run.returncode == 0, run
    assert run.stdout.splitlines() == [
        f"cleared {a.name}: removed 2 live messages",
        f"cleared {b.name}: removed 1 live message",
    ]
    assert (await a.status()).ntotal == (await b.status()).ntotal == 0


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["queues"],
        ["enqueue", "q", "1"],
        ["message-status", "q", "m"],
        ["clear", "q", "--yes"],
        ["failed", "q"],
        ["replay", "q", "--all"],
        ["purge-failed", "q", "m"],
    ],
    ids=lambda args: args[0],
)
async def test_unreachable_server(args: list[str]) -> None:
    """Every command reports an unreachable server in one line, exit code 1."""
    assert_one_line_error(await vermilion(*args, url=UNREACHABLE), 1, "Redis connection failed")


async def test_bad_input(redis_url: str) -> None:
    """Bad names, patterns, URLs and options: one line each, exit code 2, no traceback."""
    assert_one_line_error(await vermilion("status", "no spaces", url=redis_url), 2, "queue name")
    assert_one_line_error(await vermilion("queues", "--pattern", "{x}", url=redis_url), 2, "pattern")
    assert_one_line_error(await vermilion("status", url="http://host"), 2, "--url")
    assert_one_line_error(await vermilion("status", "--frobnicate", url=redis_url), 2, "--frobnicate")
    assert_one_line_error(await vermilion(url=None), 2, "COMMAND")


# -- the failure history ------------------------------------------------------------------


async def fail_one(queue: Queue, content: object, mid: str, reason: str) -> None:
    await queue.enqueue(content, mid=mid)
    assert await ack(queue, await lease_one(queue), "f", reason=reason)


async def test_failed_table_and_json(queue: Queue, redis_url: str) -> None:
    """`failed` lists the history newest first; --json gives every field whole."""
    await fail_one(queue, {"n": 1}, "old", "first\nline")
    await asyncio.sleep(0.002)
    await fail_one(queue, "x" * 100, "new", "why")
    run = await vermilion("failed", queue.name, url=redis_url)
    assert run.returncode == 0, run
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["failed", "at", "(UTC)", "mid", "attempts", "reason", "content"]
    assert [line.split()[2] for line in lines[2:]] == ["new", "old"]
    assert "first\\nline" in lines[3] and '{"n": 1}' in lines[3]
    assert '"' + "x" * 56 + "..." in lines[2]  # cut to one short line

    run = await vermilion("failed", queue.name, "--json", "--limit", "1", "--offset", "1", url=redis_url)
    assert run.returncode == 0, run
    [row] = json.loads(run.stdout)
    assert {key: row[key] for key in ("mid", "content", "reason", "attempts")} == {
        "mid": "old",
        "content": {"n": 1},
        "reason": "first\nline",
        "attempts": 1,
    }
    assert row["failed_at"].endswith("+00:00")


async def test_failed_shows_undecodable_content_as_its_repr(queue: Queue, redis_url: str) -> None:
    async with Queue(queue.name, redis=queue.redis, serializer=JsonSerializer()) as json_queue:
        await fail_one(json_queue, "text", "m", "boom")
    run = await vermilion("failed", queue.name, "--json", url=redis_url)  # the CLI decodes msgpack
    [row] = json.loads(run.stdout)
    assert row["content"] == repr(b'"text"')


async def test_failed_of_an_empty_history(queue: Queue, redis_url: str) -> None:
    run = await vermilion("failed", queue.name, url=redis_url)
    assert (run.returncode, run.stdout) == (0, f"no failed messages in {queue.name}\n")
    run = await vermilion("failed", queue.name, "--json", url=redis_url)
    assert (run.returncode, json.loads(run.stdout)) == (0, [])


async def test_replay_mids_and_all(queue: Queue, redis_url: str) -> None:
    """`replay` answers per mid, exit code 3 if any was not replayed; --all replays the rest."""
    for mid in ("a", "b", "c"):
        await fail_one(queue, mid, mid, "boom")
    run = await vermilion("replay", queue.name, "a", url=redis_url)
    assert (run.returncode, run.stdout) == (0, "replayed a\n")
    run = await vermilion("replay", queue.name, "a", "zz", "b", "--json", url=redis_url)
    assert run.returncode == 3, run
    assert json.loads(run.stdout) == [
        {"mid": "a", "ok": False, "error": "live"},
        {"mid": "zz", "ok": False, "error": "unknown"},
        {"mid": "b", "ok": True, "error": None},
    ]
    run = await vermilion("replay", queue.name, "zz", url=redis_url)
    assert (run.returncode, run.stdout) == (3, "not replayed zz: unknown\n")
    run = await vermilion("replay", queue.name, "--all", url=redis_url)
    assert (run.returncode, run.stdout) == (0, f"replayed 1 failed message of {queue.name}\n")
    assert (await queue.status()).nqueued == 3
    run = await vermilion("replay", queue.name, "--all", "--json", url=redis_url)
    assert json.loads(run.stdout) == {"queue": queue.name, "replayed": 0}


async def test_purge_failed_mids_and_all(queue: Queue, redis_url: str) -> None:
    for mid in ("a", "b", "c"):
        await fail_one(queue, mid, mid, "boom")
    run = await vermilion("purge-failed", queue.name, "a", "zz", url=redis_url)
    assert (run.returncode, run.stdout) == (0, f"purged 1 failed message of {queue.name}\n")
    run = await vermilion("purge-failed", queue.name, "--all", "--json", url=redis_url)
    assert (run.returncode, json.loads(run.stdout)) == (0, {"queue": queue.name, "purged": 2})
    assert (await queue.status()).nfailed == 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["replay", "{queue}"], "mids or --all"),
        (["replay", "{queue}", "a", "--all"], "mids or --all"),
        (["purge-failed", "{queue}"], "mids or --all"),
        (["purge-failed", "{queue}", "a", "--all"], "mids or --all"),
        (["failed", "{queue}", "--limit", "-1"], "--limit"),
        (["failed", "{queue}", "--limit", "10001"], "limit"),
        (["failed", "{queue}", "--offset", "x"], "--offset"),
        (["failed", "bad name"], "queue name"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
async def test_failure_history_commands_refuse_bad_input(
    queue: Queue, redis_url: str, args: list[str], fragment: str
) -> None:
    run = await vermilion(*(arg.replace("{queue}", queue.name) for arg in args), url=redis_url)
    assert_one_line_error(run, 2, fragment)


# -- global options ------------------------------------------------------------------------


async def test_status_json_uses_the_field_names_of_queue_status(queue: Queue, redis_url: str) -> None:
    """`status --json` rows are the queue's name plus every QueueStatus field, by its own name."""
    await queue.enqueue("x")
    run = await vermilion("status", queue.name, "--json", url=redis_url)
    assert run.returncode == 0, run
    [row] = json.loads(run.stdout)
    assert set(row) == {"queue"} | {field.name for field in dataclasses.fields(QueueStatus)}
    assert row["nqueued"] == 1 and row["ntotal"] == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["status"], list),
        (["queues"], list),
        (["enqueue", "{queue}", "1", "--mid", "g1"], dict),
        (["message-status", "{queue}", "g1"], dict),
        (["clear", "{queue}", "--yes"], list),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else "",
)
async def test_global_options_before_the_command(
    queue: Queue, redis_url: str, args: list[str], expected: type
) -> None:
    """`vermilion --url URL --json COMMAND ...` works for every command that takes them."""
    command = [arg.format(queue=queue.name) for arg in args]
    run = await vermilion("--url", redis_url, "--json", *command, url=None, env=without_vermilion_url())
    assert run.returncode == 0, run
    assert isinstance(json.loads(run.stdout), expected)


async def test_an_option_after_the_command_wins(queue: Queue, redis_url: str) -> None:
    """Given before and after the command, the one after the command is used."""
    await queue.enqueue("x", mid="m")
    run = await vermilion("--url", UNREACHABLE, "message-status", queue.name, "m", url=redis_url)
    assert (run.returncode, run.stdout.strip()) == (0, "queued"), run
    run = await vermilion("--url", redis_url, "message-status", queue.name, "m", url=UNREACHABLE)
    assert_one_line_error(run, 1, "Redis connection failed")


@pytest.mark.parametrize("command", [["worker", "app:handle", "--queue", "q"], ["demo"]], ids=str)
async def test_json_is_refused_for_a_command_without_it(command: list[str]) -> None:
    """`--json` before a command that prints no JSON is a usage error, not silently ignored."""
    run = await vermilion("--json", *command, url=None)
    assert_one_line_error(run, 2, "--json is not an option of " + command[0])


def without_vermilion_url() -> dict[str, str]:
    """The environment without $VERMILION_URL, so that only the command line names the server."""
    return {key: value for key, value in os.environ.items() if key != "VERMILION_URL"}


# -- worker ------------------------------------------------------------------------------

HANDLERS = """
from __future__ import annotations

import asyncio
from pathlib import Path

from vermilion import Message

LOG = Path(__file__).with_name("handled.log")
NOT_CALLABLE = 42


def note(line: str) -> None:
    with LOG.open("a") as log:
        log.write(line + "\\n")


async def handle(message: Message) -> None:
    if message.content.get("slow"):
        note(f"started {message.mid}")
        await asyncio.sleep(message.content["slow"])
    note(f"done {message.mid}")


def sync_handle(message: Message) -> None:
    return None
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A directory holding the package ``jobs`` with handlers in ``jobs.tasks``."""
    package = tmp_path / "jobs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(textwrap.dedent(HANDLERS))
    (package / "broken.py").write_text('raise RuntimeError("boom")\n')
    return tmp_path


class WorkerProcess:
    """``vermilion worker jobs.tasks:handle`` running in ``app_dir``."""

    def __init__(self, process: asyncio.subprocess.Process, app_dir: Path) -> None:
        self.process = process
        self.log = app_dir / "jobs" / "handled.log"
        self.stderr: list[str] = []

    @classmethod
    async def start(cls, app_dir: Path, redis_url: str, queue: str, *options: str) -> WorkerProcess:
        process = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "vermilion", "worker", "jobs.tasks:handle", "--queue", queue],
            *["--url", redis_url, *options],
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            cwd=app_dir,
        )
        return cls(process, app_dir)

    def handled(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    async def wait_for_log(self, line: str, timeout: float = 15.0) -> None:
        async def seen() -> bool:
            return line in self.handled()

        await eventually(seen, timeout, interval=0.02, what=f"handler log line {line!r}")

    async def wait_for_stderr(self, fragment: str, timeout: float = 15.0) -> None:
        assert self.process.stderr is not None
        deadline = time.monotonic() + timeout
        while not any(fragment in line for line in self.stderr):
            line = await asyncio.wait_for(
                self.process.stderr.readline(), max(0.0, deadline - time.monotonic())
            )
            if not line:
                raise AssertionError(f"the worker exited before logging {fragment!r}: {self.stderr}")
            self.stderr.append(line.decode().rstrip("\n"))

    async def exit_code(self, timeout: float = 15.0) -> int:
        assert self.process.stderr is not None
        rest = await asyncio.wait_for(self.process.stderr.read(), timeout)
        self.stderr += rest.decode().splitlines()
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def close(self) -> None:
        """Kill the worker if a test failed before it exited."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def test_worker_handles_and_stops_gracefully(
    make_queue: QueueFactory, redis_url: str, app_dir: Path
) -> None:
    """The worker handles messages; on SIGTERM a running handler finishes and is acked; exit code 0."""
    queue = await make_queue()
    worker = await WorkerProcess.start(app_dir, redis_url, queue.name, "--concurrency", "4")
    try:
        await worker.wait_for_stderr("worker started")
        await queue.enqueue_many([{"n": i} for i in range(5)], mids=[f"fast-{i}" for i in range(5)])
        for i in range(5):
            await worker.wait_for_log(f"done fast-{i}")
        await queue.enqueue({"slow": 1.0}, mid="slow")
        await worker.wait_for_log("started slow")
        worker.process.send_signal(signal.SIGTERM)
        assert await worker.exit_code() == 0, worker.stderr
    finally:
        await worker.close()
    assert worker.handled()[-1] == "done slow"
    assert await queue.message_status("slow") is None  # acknowledged before the exit
    assert (await queue.status()).ntotal == 0
    text = "\n".join(worker.stderr)
    assert "received SIGTERM" in text and "worker stopped" in text and "6 success" in text
    assert "Traceback" not in text


async def test_worker_leaves_unfinished_work_to_its_lease(
    make_queue: QueueFactory, redis_url: str, app_dir: Path
) -> None:
    """Past --stop-timeout a handler is cancelled and its message stays locked; exit code 0."""
    queue = await make_queue()
    worker = await WorkerProcess.start(app_dir, redis_url, queue.name, "--stop-timeout", "0.2")
    try:
        await queue.enqueue({"slow": 60}, mid="slow")
        await worker.wait_for_log("started slow")
        worker.process.send_signal(signal.SIGINT)
        assert await worker.exit_code() == 0, worker.stderr
    finally:
        await worker.close()
    assert "done slow" not in worker.handled()
    assert await queue.message_status("slow") == MessageStatus.LOCKED
    assert any("past the stop timeout" in line for line in worker.stderr)


async def test_second_signal_stops_at_once(make_queue: QueueFactory, redis_url: str, app_dir: Path) -> None:
    """A second signal stops without waiting for the 30 s stop timeout; exit code 4."""
    queue = await make_queue()
    worker = await WorkerProcess.start(app_dir, redis_url, queue.name)
    try:
        await queue.enqueue({"slow": 60}, mid="slow")
        await worker.wait_for_log("started slow")
        worker.process.send_signal(signal.SIGTERM)
        await worker.wait_for_stderr("received SIGTERM")
        worker.process.send_signal(signal.SIGTERM)
        assert await worker.exit_code(timeout=10) == 4, worker.stderr
    finally:
        await worker.close()
    assert await queue.message_status("slow") == MessageStatus.LOCKED


@pytest.mark.parametrize(
    ("spec", "exit_code", "fragment"),
    [
        ("jobs", 2, "MODULE:HANDLER"),
        ("nosuchmodule:handle", 2, "no module named 'nosuchmodule'"),
        ("jobs.nosuch:handle", 2, "no module named 'jobs.nosuch'"),
        ("jobs.tasks:missing", 2, "has no attribute 'missing'"),
        ("jobs.tasks:NOT_CALLABLE", 2, "is not callable"),
        ("jobs.tasks:sync_handle", 2, "not an async function"),
        ("jobs.broken:handle", 1, "RuntimeError: boom"),
    ],
    ids=["no-colon", "no-module", "no-submodule", "no-attribute", "not-callable", "not-async", "raises"],
)
async def test_worker_bad_handler(
    app_dir: Path, redis_url: str, spec: str, exit_code: int, fragment: str
) -> None:
    """A handler that cannot be loaded: one line saying why, before Redis is touched."""
    run = await vermilion("worker", spec, "--queue", "q", url=UNREACHABLE, cwd=app_dir)
    assert_one_line_error(run, exit_code, fragment)


async def test_worker_waits_for_an_unreachable_server(app_dir: Path) -> None:
    """Workers wait for Redis: the worker says it cannot connect, keeps trying, stops on SIGTERM."""
    worker = await WorkerProcess.start(app_dir, UNREACHABLE, "q")
    try:
        await worker.wait_for_stderr("Redis is unreachable")
        await worker.wait_for_stderr("poll of queue 'q' failed")
        assert worker.process.returncode is None
        worker.process.send_signal(signal.SIGTERM)
        assert await worker.exit_code() == 0, worker.stderr
    finally:
        await worker.close()
    assert "Traceback" not in "\n".join(worker.stderr)


async def test_configure_sets_shows_and_removes_the_bound(queue: Queue, redis_url: str) -> None:
    """configure --max-size bounds the queue, configure alone shows it, --no-max-size removes it."""
    run = await vermilion("configure", queue.name, "--max-size", "2", url=redis_url)
    assert run.returncode == 0, run
    assert run.stdout.splitlines() == [f"{queue.name}: max size 2, rate limit none, max per key none"]
    assert (await queue.status()).max_size == 2
    run = await vermilion("configure", queue.name, "--json", url=redis_url)
    assert json.loads(run.stdout) == {
        "queue": queue.name,
        "max_size": 2,
        "rate_limit": None,
        "rate_interval": None,
        "max_per_key": None,
    }
    run = await vermilion("configure", queue.name, "--no-max-size", url=redis_url)
    assert run.stdout.splitlines() == [f"{queue.name}: max size none, rate limit none, max per key none"]
    assert (await queue.status()).max_size is None
    both = await vermilion("configure", queue.name, "--max-size", "2", "--no-max-size", url=redis_url)
    assert_one_line_error(both, 2, "not both")
    zero = await vermilion("configure", queue.name, "--max-size", "0", url=redis_url)
    assert_one_line_error(zero, 2, "at least 1")


async def test_configure_sets_and_removes_the_rate_limit(queue: Queue, redis_url: str) -> None:
    run = await vermilion(
        "configure", queue.name, "--rate-limit", "50", "--rate-interval", "0.5", url=redis_url
    )
    assert run.stdout.splitlines() == [
        f"{queue.name}: max size none, rate limit 50 per 0.5 s, max per key none"
    ]
    assert (await queue.configure()).rate_limit == 50
    run = await vermilion("configure", queue.name, "--no-rate-limit", url=redis_url)
    assert run.stdout.splitlines() == [f"{queue.name}: max size none, rate limit none, max per key none"]
    both = await vermilion("configure", queue.name, "--rate-limit", "5", "--no-rate-limit", url=redis_url)
    assert_one_line_error(both, 2, "not both")


async def test_configure_sets_and_removes_the_per_key_limit(queue: Queue, redis_url: str) -> None:
    run = await vermilion("configure", queue.name, "--max-per-key", "3", url=redis_url)
    assert run.stdout.splitlines() == [f"{queue.name}: max size none, rate limit none, max per key 3"]
    assert (await queue.configure()).max_per_key == 3
    run = await vermilion("configure", queue.name, "--no-max-per-key", "--json", url=redis_url)
    assert json.loads(run.stdout)["max_per_key"] is None
