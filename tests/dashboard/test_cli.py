"""``vermilion dashboard``: its options, its token, and the message when the extra is missing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys

import httpx
import pytest

from tests.integration.test_cli import assert_one_line_error, vermilion
from vermilion import Queue
from vermilion._cli import main
from vermilion._cli._dashboard import allowed_hosts
from vermilion._cli._parser import parse_args


def test_it_binds_this_machine_only_and_has_actions_off_by_default() -> None:
    args = parse_args(["dashboard"])
    assert (args.host, args.port, args.actions, args.interval, args.history) == (
        "127.0.0.1",
        8000,
        False,
        1.0,
        600.0,
    )


@pytest.mark.parametrize(
    ("args", "hosts"),
    [
        ([], ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.1"]),
        (["--host", "localhost"], ["127.0.0.1", "localhost", "::1", "[::1]", "localhost"]),
        (["--host", "127.0.0.2"], ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"]),
        (["--host", "0.0.0.0"], None),
        (["--host", "0.0.0.0", "--allowed-host", "q.example", "--allowed-host", "*.ops.example"], None),
    ],
)
def test_the_host_names_it_answers_to(args: list[str], hosts: list[str] | None) -> None:
    parsed = parse_args(["dashboard", *args])
    expected = parsed.allowed_hosts if parsed.allowed_hosts else hosts
    assert allowed_hosts(parsed) == expected
    if "--allowed-host" in args:
        assert expected == ["q.example", "*.ops.example"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--port", "0"], "a port from 1 to 65535"),
        (["--port", "65536"], "a port from 1 to 65535"),
        (["--interval", "0"], "more than 0"),
        (["--interval", "0.01"], "interval must be"),
        (["--history", "0.5"], "history must be"),
        (["--allowed-host", "a.*.example"], "allowed_hosts"),
    ],
)
async def test_bad_options_are_usage_errors(args: list[str], fragment: str) -> None:
    run = await vermilion("dashboard", *args, url="redis://127.0.0.1:1/0")
    assert_one_line_error(run, 2, fragment)


async def test_a_short_token_from_the_environment_is_refused() -> None:
    env = {**os.environ, "VERMILION_DASHBOARD_TOKEN": "short"}
    run = await vermilion("dashboard", "--actions", url="redis://127.0.0.1:1/0", env=env)
    assert_one_line_error(run, 2, "$VERMILION_DASHBOARD_TOKEN", "at least 16")


def test_without_the_extra_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    assert main(["dashboard"]) == 2
    assert "pip install 'vermilion[dashboard]' (missing: uvicorn)" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_with_actions_and_no_token_it_prints_a_fresh_one_that_works(
    queue: Queue, redis_url: str
) -> None:
    await queue.enqueue("x")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "VERMILION_DASHBOARD_TOKEN"}
    process = await asyncio.create_subprocess_exec(
        *(
            sys.executable,
            "-m",
            "vermilion",
            "dashboard",
            "--url",
            redis_url,
            "--port",
            str(port),
            "--actions",
        ),
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stderr is not None
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        assert "actions enabled" in line
        token = line.rsplit(" ", 1)[1].strip()
        assert len(token) >= 16
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            url = f"/api/queues/{queue.name}/purge-failed"
            for _ in range(300):  # until it listens and has seen the queue
                try:
                    answer = await client.post(url, json={"all": True}, headers={"X-Vermilion-Token": token})
                except httpx.TransportError:
                    answer = None
                if answer is not None and answer.status_code != 404:
                    break
                await asyncio.sleep(0.1)
            assert answer is not None and answer.status_code == 200, answer
            assert answer.json() == {"purged": 0}
            refused = await client.post(url, json={"all": True}, headers={"X-Vermilion-Token": token + "x"})
            assert refused.status_code == 401
    finally:
        process.terminate()
        assert await process.wait() == 0  # a graceful stop


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_stops_it_gracefully_with_exit_code_0(redis_url: str, signum: int) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "vermilion", "dashboard", "--url", redis_url, "--port", str(port)),
        stderr=asyncio.subprocess.PIPE,
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(300):
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/api/overview")).status_code == 200:
                    break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the dashboard did not answer")
    process.send_signal(signum)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert b"Traceback" not in err
