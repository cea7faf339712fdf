"""Run every measure for every library and write the tables to results.md.

    python benchmarks/run.py                 # the standard run (3 repetitions)
    python benchmarks/run.py --quick         # small sizes, 1 repetition: a smoke test
    python benchmarks/run.py --full          # memory up to 1,000,000 messages
    python benchmarks/run.py --only vermilion,bare-list --measures drain,latency

It starts its own Redis server (``redis-server`` on a free port, no persistence,
pinned to one core with ``taskset``), runs each (measure, library, repetition)
as a fresh process pinned to the other core, with FLUSHALL and CONFIG RESETSTAT
before each, and reports medians with min/max. This file needs only the
standard library; the measure scripts run under the benchmark environment's
interpreter (``--python``; arq under ``--python-arq``, see README.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DASH = "\u2013"  # en dash, for ranges
TIMES = "\u00d7"  # multiplication sign, for ratios
LIBRARIES = ("vermilion", "arq", "saq", "taskiq", "streaq", "bullmq", "bare-list")
# Variants measured only when named with --only: vermilion with metrics, or metrics and tracing.
VARIANTS = ("vermilion-metrics", "vermilion-observed", "vermilion-observed-10pct")
PEERS = ("arq", "saq", "taskiq", "streaq", "bullmq")
CEILING = "bare-list"
MEASURES = ("enqueue", "batch", "drain", "latency", "idle", "memory", "footprint")
SCRIPTS = {
    "enqueue": "enqueue.py",
    "batch": "enqueue_batch.py",
    "drain": "drain.py",
    "latency": "latency.py",
    "idle": "idle.py",
    "memory": "memory.py",
    "footprint": "footprint.py",
}
PACKAGES = (
    "vermilion",
    "arq",
    "saq",
    "taskiq",
    "taskiq-redis",
    "streaq",
    "coredis",
    "bullmq",
    "redis",
    "hiredis",
    "msgpack",
)


@dataclass(frozen=True)
class Sizes:
    enqueue: int
    batch: int
    drain: int
    latency: int
    rate: float
    idle_warmup: float
    idle_window: float
    memory: tuple[int, ...]
    # The footprint's idle phase (defaults, so that an older results.json still renders).
    footprint_idle_settle: float = 5.0
    footprint_idle_window: float = 60.0


STANDARD = Sizes(20_000, 20_000, 20_000, 2_000, 500.0, 5.0, 10.0, (20_000, 50_000), 5.0, 60.0)
QUICK = Sizes(2_000, 5_000, 3_000, 500, 500.0, 2.0, 3.0, (2_000, 5_000), 5.0, 20.0)
FULL_MEMORY = (20_000, 1_000_000)


@dataclass(frozen=True)
class Metric:
    measure: str
    key: str
    label: str
    unit: str
    higher_is_better: bool
    digits: int


def metrics(sizes: Sizes) -> list[Metric]:
    big = sizes.memory[-1]
    out = [
        Metric("enqueue", "enqueue_rate", "enqueue, one `await` at a time", "msg/s", True, 0),
        Metric("enqueue", "enqueue_cpu_us", "… producer CPU per message", "µs", False, 0),
        Metric("batch", "batch_rate", "enqueue, batches of 100", "msg/s", True, 0),
        Metric("drain", "drain_rate", f"drain {sizes.drain:,}, 1 worker, concurrency 50", "msg/s", True, 0),
        Metric("drain", "drain_cpu_us", "… worker CPU per message", "µs", False, 1),
        Metric("latency", "latency_p50_ms", f"latency at {sizes.rate:g}/s, p50", "ms", False, 2),
        Metric("latency", "latency_p90_ms", "… p90", "ms", False, 2),
        Metric("latency", "latency_p99_ms", "… p99", "ms", False, 2),
        Metric("latency", "latency_max_ms", "… max", "ms", False, 2),
        Metric("idle", "idle_cmds_per_s", "idle worker: client commands", "cmd/s", False, 2),
        Metric("idle", "idle_all_cmds_per_s", "… incl. commands inside scripts", "cmd/s", False, 2),
        Metric("footprint", "redis_bytes_per_msg", "Redis memory per queued message", "B", False, 0),
        Metric("footprint", "redis_cpu_enqueue_us", "Redis CPU per single enqueue", "µs", False, 1),
        Metric(
            "footprint", "redis_cmds_per_enqueue", "… commands per enqueue, incl. in scripts", "cmd", False, 1
        ),
        Metric("footprint", "redis_cpu_handled_us", "Redis CPU per handled message", "µs", False, 1),
        Metric(
            "footprint",
            "redis_idle_cmds_per_s",
            f"idle worker: commands per second, incl. in scripts ({sizes.footprint_idle_window:g} s)",
            "cmd/s",
            False,
            2,
        ),
        Metric(
            "footprint",
            "redis_idle_start_cmds_per_s",
            f"… in its first {sizes.footprint_idle_settle:g} s, start-up included",
            "cmd/s",
            False,
            1,
        ),
        Metric("footprint", "idle_wake_ms", "… then one enqueue → handler start", "ms", False, 2),
    ]
    out += [
        Metric("memory", f"rss_{n}_mb", f"worker RSS after {n:,} messages", "MiB", False, 1)
        for n in sizes.memory
    ]
    if len(sizes.memory) > 1:
        out.append(
            Metric("memory", "rss_growth_mb", f"… growth {sizes.memory[0]:,} → {big:,}", "MiB", False, 2)
        )
    return out


# -- a minimal Redis client (stdlib only) ---------------------------------------------


def redis_command(port: int, *args: str, timeout: float = 30.0) -> str:
    """Send one command, return its reply as text (simple, error, integer or bulk)."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request.encode())
        reader = s.makefile("rb")
        line = reader.readline().decode().rstrip("\r\n")
        if line.startswith("-"):
            raise RuntimeError(f"redis: {line[1:]}")
        if line.startswith("$"):
            length = int(line[1:])
            return "" if length < 0 else reader.read(length + 2)[:-2].decode()
        return line[1:]


def redis_alive(port: int) -> bool:
    try:
        return redis_command(port, "PING", timeout=1.0) == "PONG"
    except OSError:
        return False


def start_redis(port: int, cpu: int | None) -> subprocess.Popen[bytes]:
    if redis_alive(port):
        raise SystemExit(f"something already answers on port {port}: pick another with --port")
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    command = pinned(command, cpu)
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not redis_alive(port):
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"could not start {' '.join(command)}")
        time.sleep(0.05)
    return server


def pinned(command: list[str], cpu: int | None) -> list[str]:
    if cpu is None or not shutil.which("taskset"):
        return command
    return ["taskset", "-c", str(cpu), *command]


# -- running one measurement ---------------------------------------------------------


def measure_arguments(measure: str, sizes: Sizes) -> list[str]:
    if measure == "enqueue":
        return ["--n", str(sizes.enqueue)]
    if measure == "batch":
        return ["--n", str(sizes.batch)]
    if measure == "drain":
        return ["--n", str(sizes.drain)]
    if measure == "latency":
        return ["--n", str(sizes.latency), "--rate", str(sizes.rate)]
    if measure == "idle":
        return ["--warmup", str(sizes.idle_warmup), "--window", str(sizes.idle_window)]
    if measure == "footprint":
        return [
            "--n",
            str(sizes.batch),
            "--singles",
            str(sizes.enqueue // 4),
            "--idle-settle",
            str(sizes.footprint_idle_settle),
            "--idle-window",
            str(sizes.footprint_idle_window),
        ]
    return ["--checkpoints", ",".join(str(n) for n in sizes.memory)]


def measure_timeout(measure: str, sizes: Sizes) -> float:
    return {
        "enqueue": 60 + sizes.enqueue / 100,
        "batch": 60 + sizes.batch / 100,
        "drain": 120 + sizes.drain / 50,
        "latency": 90 + sizes.latency / sizes.rate,
        "idle": 60 + sizes.idle_warmup + sizes.idle_window,
        "memory": 300 + sizes.memory[-1] / 100,
        "footprint": 120
        + sizes.batch / 50
        + sizes.enqueue / 400
        + sizes.footprint_idle_settle
        + sizes.footprint_idle_window,
    }[measure]


def run_one(
    python: str, measure: str, lib: str, port: int, sizes: Sizes, cpus: tuple[int, int] | None
) -> dict[str, Any]:
    redis_command(port, "FLUSHALL")
    redis_command(port, "CONFIG", "RESETSTAT")
    command = [
        python,
        str(HERE / SCRIPTS[measure]),
        "--lib",
        lib,
        "--url",
        f"redis://127.0.0.1:{port}/0",
        *measure_arguments(measure, sizes),
    ]
    if cpus is not None:
        command += ["--helper-cpu", str(cpus[0])]
    command = pinned(command, None if cpus is None else cpus[1])
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = child.communicate(timeout=measure_timeout(measure, sizes))
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # the child and its helpers: all started by us
        child.communicate()
        return {"error": f"timed out after {measure_timeout(measure, sizes):.0f} s"}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        tail = " | ".join(err.strip().splitlines()[-3:])
        return {"error": f"exit {child.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- statistics and tables -----------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    median: float
    low: float
    high: float
    n: int


def summarise(runs: Sequence[dict[str, Any]], key: str) -> Stat | None:
    values = [float(r[key]) for r in runs if key in r]
    if not values:
        return None
    return Stat(statistics.median(values), min(values), max(values), len(values))


def number(value: float, digits: int) -> str:
    if round(value, digits) == 0:
        value = 0.0  # never "-0.00"
    if digits == 0 or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def cell(stat: Stat | None, digits: int) -> str:
    if stat is None:
        return "—"
    if stat.n == 1:
        return number(stat.median, digits)
    return f"{number(stat.median, digits)} ({number(stat.low, digits)}{DASH}{number(stat.high, digits)})"


def ratio(ours: Stat | None, other: Stat | None, digits: int) -> str:
    # A denominator shown as zero (a growth of -0.004 MiB, say) makes no ratio worth printing.
    if ours is None or other is None or abs(other.median) < 0.5 * 10**-digits:
        return "—"
    r = ours.median / other.median
    return f"{r:.2f}{TIMES}" if r < 100 else f"{r:,.0f}{TIMES}"


def best_peer(stats: dict[str, Stat | None], metric: Metric) -> tuple[str, Stat] | None:
    candidates = [(lib, s) for lib, s in stats.items() if lib in PEERS and s is not None]
    if not candidates:
        return None
    choose = max if metric.higher_is_better else min
    return choose(candidates, key=lambda item: item[1].median)


def tables(results: dict[str, dict[str, list[dict[str, Any]]]], libs: Sequence[str], sizes: Sizes) -> str:
    shown = [m for m in metrics(sizes) if m.measure in results]
    head = ["measure", "unit", *libs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in shown:
        row = [m.label, m.unit]
        for lib in libs:
            runs = results[m.measure].get(lib, [])
            stat = summarise(runs, m.key)
            errors = [r["error"] for r in runs if "error" in r]
            row.append(cell(stat, m.digits) if stat or not errors else "failed")
        lines.append("| " + " | ".join(row) + " |")
    out = [f"### Absolute numbers: median of the repetitions (min{DASH}max)", "", *lines, ""]

    if "vermilion" in libs:
        head = ["measure", "better", "vermilion", "best peer", "vermilion ÷ best peer", "ceiling (bare list)"]
        head.append("vermilion ÷ ceiling")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in shown:
            stats = {lib: summarise(results[m.measure].get(lib, []), m.key) for lib in libs}
            ours = stats.get("vermilion")
            best = best_peer(stats, m)
            ceiling = stats.get(CEILING)
            lines.append(
                "| "
                + " | ".join(
                    [
                        m.label,
                        "higher" if m.higher_is_better else "lower",
                        cell(ours, m.digits).split(" (")[0],
                        "—" if best is None else f"{number(best[1].median, m.digits)} ({best[0]})",
                        "—" if best is None else ratio(ours, best[1], m.digits),
                        cell(ceiling, m.digits).split(" (")[0],
                        ratio(ours, ceiling, m.digits),
                    ]
                )
                + " |"
            )
        out += [
            "### vermilion against the best peer and the ceiling (medians)",
            "",
            "A ratio is vermilion's median divided by the other's: above 1 is better where higher",
            "is better (rates), below 1 is better where lower is better (CPU, latency, commands, memory).",
            "",
            *lines,
            "",
        ]
    return "\n".join(out)


def failures(results: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    out = []
    for measure, by_lib in results.items():
        for lib, runs in by_lib.items():
            out += [f"- {measure} / {lib}: {r['error']}" for r in runs if "error" in r]
    return out


# -- environment description ---------------------------------------------------------


def versions(python: str) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m, platform\n"
        f"names = {list(PACKAGES)!r}\n"
        "found = {}\n"
        "for n in names:\n"
        "    try: found[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "found['python'] = platform.python_version()\n"
        "print(json.dumps(found))\n"
    )
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    found: dict[str, str] = json.loads(out)
    return found


def machine() -> dict[str, str]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    return {
        "cpus": str(os.cpu_count()),
        "cpu model": model,
        "memory": memory,
        "kernel": platform.release(),
    }


def git_state() -> str:
    try:
        git = ["git", "-C", str(HERE)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "../src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' with uncommitted changes in src/' if dirty else ''}"


# -- main ----------------------------------------------------------------------------


def report(
    header: list[str],
    results: dict[str, dict[str, list[dict[str, Any]]]],
    libs: Sequence[str],
    sizes: Sizes,
    out: Path,
) -> None:
    text = "\n".join(header) + "\n" + tables(results, libs, sizes)
    problems = failures(results)
    if problems:
        text += "\n### Failed runs\n\n" + "\n".join(problems) + "\n"
    print()
    print(text)
    out.write_text(text)


def render(raw: Path, out: Path) -> int:
    """Write the tables again from a results.json (after a change of format)."""
    data = json.loads(raw.read_text())
    sizes = Sizes(**{**data["sizes"], "memory": tuple(data["sizes"]["memory"])})
    report(data["header"], data["results"], data["libs"], sizes, out)
    return 0


def default_python(path: str) -> str:
    return path if Path(path).exists() else sys.executable


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, 1 repetition unless --reps")
    p.add_argument("--full", action="store_true", help="memory up to 1,000,000 messages")
    p.add_argument("--only", action="append", default=[], help="libraries, comma-separated (repeatable)")
    p.add_argument("--measures", nargs="+", default=list(MEASURES), help=f"any of {', '.join(MEASURES)}")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 3; 1 with --quick)")
    p.add_argument("--memory-checkpoints", default=None, help="e.g. 20000,1000000")
    p.add_argument(
        "--footprint-idle-window",
        type=float,
        default=None,
        help="idle seconds measured by the footprint (default 60; 20 with --quick)",
    )
    p.add_argument("--port", type=int, default=6390, help="port for the benchmark's own redis-server")
    p.add_argument("--redis-cpu", type=int, default=0)
    p.add_argument("--bench-cpu", type=int, default=1)
    p.add_argument("--no-pin", action="store_true", help="do not use taskset")
    p.add_argument("--python", default=default_python("/work/bench-venv/bin/python"))
    p.add_argument("--python-arq", default=default_python("/work/bench-venv-arq/bin/python"))
    p.add_argument("--out", type=Path, default=HERE / "results.md")
    p.add_argument("--raw", type=Path, default=HERE / "results.json")
    p.add_argument("--render", action="store_true", help="only rewrite --out from --raw; run nothing")
    args = p.parse_args(argv)
    measures = [m for item in args.measures for m in item.split(",") if m]
    unknown = sorted(set(measures) - set(MEASURES))
    if unknown:
        p.error(f"unknown measures: {', '.join(unknown)}")
    args.measures = [m for m in MEASURES if m in measures]
    libs = [lib for item in args.only for lib in item.split(",") if lib]
    unknown = sorted(set(libs) - set(LIBRARIES) - set(VARIANTS))
    if unknown:
        p.error(f"unknown libraries: {', '.join(unknown)}")
    args.libs = [lib for lib in (*LIBRARIES, *VARIANTS) if lib in libs] if libs else list(LIBRARIES)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.render:
        return render(args.raw, args.out)
    sizes = QUICK if args.quick else STANDARD
    if args.full:
        sizes = Sizes(**{**sizes.__dict__, "memory": FULL_MEMORY})
    if args.memory_checkpoints:
        checkpoints = tuple(sorted({int(n) for n in args.memory_checkpoints.split(",")}))
        sizes = Sizes(**{**sizes.__dict__, "memory": checkpoints})
    if args.footprint_idle_window is not None:
        sizes = Sizes(**{**sizes.__dict__, "footprint_idle_window": args.footprint_idle_window})
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    can_pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    cpus = (args.redis_cpu, args.bench_cpu) if can_pin else None
    pythons = {lib: args.python_arq if lib == "arq" else args.python for lib in args.libs}

    server = start_redis(args.port, None if cpus is None else cpus[0])
    started = datetime.datetime.now(datetime.timezone.utc)
    measured = git_state()  # the work tree as it is now: vermilion is installed from it (editable)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        m: {lib: [] for lib in args.libs} for m in args.measures
    }
    try:
        redis_version = redis_command(args.port, "INFO", "server").split("redis_version:")[1].split()[0]
        for measure in args.measures:
            for rep in range(1, reps + 1):
                for lib in args.libs:
                    began = time.perf_counter()
                    result = run_one(pythons[lib], measure, lib, args.port, sizes, cpus)
                    results[measure][lib].append(result)
                    shown = result.get("error") or ", ".join(
                        f"{k}={v:,.2f}" for k, v in result.items() if isinstance(v, float)
                    )
                    print(
                        f"[{measure} {rep}/{reps}] {lib:<10} {time.perf_counter() - began:6.1f} s  {shown}",
                        flush=True,
                    )
    finally:
        server.terminate()
        server.wait(timeout=10)

    if git_state() != measured:
        measured += f" at the start, {git_state()} at the end (the work tree changed during the run)"
    env_versions = {python: versions(python) for python in sorted(set(pythons.values()))}
    header = [
        "# Benchmark results",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC: `{' '.join(['python benchmarks/run.py', *sys.argv[1:]])}`",
        f"({reps} repetition{'s' if reps > 1 else ''}; vermilion at {measured}).",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()) + f"; Redis {redis_version}.",
        "Pinning: "
        + (
            f"redis-server on core {cpus[0]}, the measured process on core {cpus[1]},"
            f" helper processes (queue filling, the latency producer) on core {cpus[0]}."
            if cpus
            else "none."
        ),
        "",
    ]
    for python, found in env_versions.items():
        listed = ", ".join(f"{k} {v}" for k, v in found.items())
        header.append(f"- `{python}`: {listed}")
    header.append("")
    args.raw.write_text(
        json.dumps(
            {
                "header": header,
                "libs": args.libs,
                "sizes": sizes.__dict__,
                "reps": reps,
                "versions": env_versions,
                "results": results,
            },
            indent=1,
            default=str,
        )
    )
    report(header, results, args.libs, sizes, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
