"""The session service under load, against a plain-GET baseline endpoint in the same run.

    python bench/bench_service.py [--sessions 2000] [--seconds 10] [--sweep 1000,2000,...]
                                  [--no-pin] [--json out.json]

Needs `wrk` (Debian package) for the maximum-throughput runs. For each server (the service
with auto-pipelining, the service without it, and a baseline FastAPI endpoint doing one
redis GET) it measures:

1. maximum throughput: wrk, 1 thread, 64 connections, validating random hot sessions;
2. latency at 70% of that maximum: an open-model load generator in another process sends
   requests on a fixed schedule and measures each from its scheduled time, so a slow server
   cannot hide latency by slowing the sender (no coordinated omission; the generator runs
   without its garbage collector, whose pauses would be counted as the server's); and the floor
   (below) at the service's 70% rate, which says whether the generator keeps up there;
3. a sweep: latency at fixed open-model rates of the service, the baseline and the floor,
   an ASGI app answering every request at once on the same uvicorn: what this generator,
   this HTTP stack and this machine add to any endpoint.

Servers run one at a time on the same Redis, each in its own process. The server under test
gets a core of its own (`sched_setaffinity`); Redis, wrk and the generator share the others
(`--no-pin` lets every process run anywhere).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import httpx
import redis
from _process import process_cpu_seconds
from _results import write_results
from serve_for_bench import GC_THRESHOLD_VARIABLE

from sessionflow import RedisBackend, SessionStore
from sessionflow._load_run import wait_until
from sessionflow.local_servers import RedisServer, free_port

HERE = Path(__file__).resolve().parent
PATH = "/v1/sessions/validate"
SERVERS = ("service", "service-unpipelined", "baseline")
REQUEST_TIMEOUT = 10.0


@dataclass
class ServerResult:
    server: str
    wrk_rps: float
    max_rps: float
    max_p50_ms: float
    max_p99_ms: float
    target_rps: float
    achieved_rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    max_cpu_us: float
    paced_cpu_us: float


def with_server_cpu(
    pid: int, run: Callable[[], dict[str, float]], seconds: float
) -> dict[str, float]:
    """`run()`'s figures plus the server's CPU time per answered request (``cpu_us``)."""
    before = process_cpu_seconds(pid)
    figures = run()
    answered = figures["achieved"] * seconds
    figures["cpu_us"] = 1e6 * (process_cpu_seconds(pid) - before) / max(answered, 1)
    return figures


def seed(port: int, count: int) -> list[str]:
    client = redis.Redis(port=port)
    store = SessionStore(RedisBackend(client))
    ids = []
    for i in range(count):
        session = store.create({"user": f"user-{i}", "cart": ["laptop-123|2|999.99"]})
        ids.append(session.id)
        client.set(f"baseline:{session.id}", b"1")
    client.close()
    return ids


def wrk_script(ids: list[str], directory: Path) -> Path:
    bodies = ",\n".join(json.dumps(json.dumps({"id": i})) for i in ids)
    script = directory / "validate.lua"
    script.write_text(
        "local bodies = {\n" + bodies + "\n}\n"
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        "request = function()\n"
        "  return wrk.format(nil, nil, nil, bodies[math.random(#bodies)])\n"
        "end\n"
    )
    return script


def split_cores() -> tuple[set[int], set[int]] | None:
    """Return (the server's cores, everything else's), or None with fewer than two cores.

    The server gets one core of its own; Redis, wrk and the load generator share the rest.
    On a shared box the tail is otherwise set by which process the scheduler runs, not by
    the endpoint.
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    return {cores[0]}, set(cores[1:])


@contextmanager
def serving(kind: str, redis_url: str, cores: set[int] | None = None) -> Iterator[tuple[int, int]]:
    """Run one server (on `cores` if given) until the block ends; yield its port and PID.

    Its stderr goes to a file, not a pipe: a server logging errors under load would fill an
    unread pipe and block on its next write, and the run with it. The server is stopped by
    its PID on the way out, also when it failed to start.
    """
    port = free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, str(HERE / "serve_for_bench.py"), kind, str(port), redis_url],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            if cores is not None:
                os.sched_setaffinity(process.pid, cores)
            _wait_until_up(kind, port, process, log)
            yield port, process.pid
        finally:
            process.terminate()
            process.wait(timeout=10)


def _wait_until_up(kind: str, port: int, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        except httpx.TransportError as exc:
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"{kind} did not start: {log.read().decode()}") from exc
            time.sleep(0.1)
        else:
            return


def run_wrk(port: int, script: Path, seconds: int) -> tuple[float, float, float]:
    output = subprocess.run(
        ["wrk", "-t1", "-c64", f"-d{seconds}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}{PATH}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    return rps, _wrk_percentile(output, "50%"), _wrk_percentile(output, "99%")


def _wrk_percentile(output: str, label: str) -> float:
    match = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)", output)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def _requests(ids: list[str]) -> list[bytes]:
    requests = []
    for session_id in ids:
        body = json.dumps({"id": session_id}).encode()
        requests.append(
            f"POST {PATH} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    return requests


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> bool:
    """Send one request on a kept-alive connection; return True for a 200.

    Raises TimeoutError after REQUEST_TIMEOUT seconds: a lost answer is an error, not a hang.
    """
    async with asyncio.timeout(REQUEST_TIMEOUT):
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length:\s*(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
    return head.startswith(b"HTTP/1.1 200")


def _summary(latencies: list[float], elapsed: float, errors: int) -> dict[str, float]:
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "achieved": len(latencies) / elapsed,
        "p50": cuts[49] * 1000,
        "p99": cuts[98] * 1000,
        "max": max(latencies) * 1000,
        "errors": errors,
    }


async def closed_loop(
    port: int, ids: list[str], concurrency: int, seconds: float
) -> dict[str, float]:
    """Keep `concurrency` requests in flight for `seconds`: the most this generator gets through."""
    loop = asyncio.get_running_loop()
    requests = _requests(ids)
    latencies: list[float] = []
    errors = 0
    stop = loop.time() + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while loop.time() < stop:
            sent = loop.time()
            try:
                ok = await _exchange(reader, writer, random.choice(requests))
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            errors += not ok
            latencies.append(loop.time() - sent)
        writer.close()

    started = loop.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return _summary(latencies, loop.time() - started, errors)


async def open_loop(port: int, ids: list[str], rate: float, seconds: float) -> dict[str, float]:
    """Send `rate` requests/s for `seconds`, each timed from its scheduled send time."""
    loop = asyncio.get_running_loop()
    connections: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(128):
        connections.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    requests = _requests(ids)
    latencies: list[float] = []
    errors = 0

    async def one(request: bytes, scheduled: float) -> None:
        nonlocal errors
        reader, writer = await connections.get()
        try:
            errors += not await _exchange(reader, writer, request)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            errors += 1
            writer.close()  # its answer may still come: the next request needs a fresh one
            connections.put_nowait(await asyncio.open_connection("127.0.0.1", port))
            return
        latencies.append(loop.time() - scheduled)
        connections.put_nowait((reader, writer))

    interval = 1 / rate
    start = loop.time() + 0.05
    # Only the requests still in flight are kept: gathering every task of the run at the
    # end took about 100 ms at 7,000 req/s, and the last answers waited for it.
    in_flight: set[asyncio.Task[None]] = set()
    for i in range(int(rate * seconds)):
        scheduled = start + i * interval
        await wait_until(loop, scheduled)  # on time: a late send is not the server's latency
        task = asyncio.ensure_future(one(random.choice(requests), scheduled))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)
    elapsed = loop.time() - start
    while not connections.empty():
        _, writer = connections.get_nowait()
        writer.close()
    return _summary(latencies, elapsed, errors)


def generate_in_process(
    port: int, ids: list[str], mode: str, amount: float, seconds: float
) -> dict[str, float]:
    """Run the generator in its own process (``closed`` concurrency or ``open`` rate)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(ids, handle)
    argv = [sys.executable, __file__, "--generate", mode, str(port), handle.name]
    output = subprocess.run(
        [*argv, str(amount), str(seconds)], capture_output=True, text=True, check=True
    ).stdout
    Path(handle.name).unlink()
    return json.loads(output)


def measure(
    kind: str,
    redis_url: str,
    ids: list[str],
    script: Path,
    seconds: int,
    server_cores: set[int] | None,
) -> ServerResult:
    with serving(kind, redis_url, server_cores) as (port, pid):
        run_wrk(port, script, 2)  # warm up
        wrk_rps, _, _ = run_wrk(port, script, seconds)
        # The maximum that counts is the one this generator reaches: it shares the machine's
        # cores with the server during the paced run, so wrk's figure would overstate 70%.
        closed = functools.partial(generate_in_process, port, ids, "closed", 32, seconds)
        peak = with_server_cpu(pid, closed, seconds)
        target = 0.7 * peak["achieved"]
        paced_run = functools.partial(generate_in_process, port, ids, "open", target, seconds)
        paced = with_server_cpu(pid, paced_run, seconds)
    return ServerResult(
        kind, wrk_rps, peak["achieved"], peak["p50"], peak["p99"], target, paced["achieved"],
        paced["p50"], paced["p99"], paced["max"], int(paced["errors"]), peak["cpu_us"],
        paced["cpu_us"],
    )  # fmt: skip


def sweep(
    kind: str, redis_url: str, ids: list[str], rates: list[int], seconds: int,
    server_cores: set[int] | None,
) -> list[dict[str, float]]:  # fmt: skip
    """Latency of one server at fixed open-model rates (after a short warm-up)."""
    with serving(kind, redis_url, server_cores) as (port, pid):
        generate_in_process(port, ids, "open", min(rates), 2)
        return [
            {
                "rate": rate,
                **with_server_cpu(
                    pid,
                    functools.partial(generate_in_process, port, ids, "open", rate, seconds),
                    seconds,
                ),
            }
            for rate in rates
        ]


def render_sweep(figures: dict[str, list[dict[str, float]]]) -> str:
    kinds = list(figures)
    lines = [
        "| rate (req/s) | "
        + " | ".join(f"{k} p50 / p99 (ms), server CPU per request (µs)" for k in kinds)
        + " |",
        "|---:|" + "---:|" * len(kinds),
    ]
    for row in zip(*(figures[k] for k in kinds), strict=True):
        cells = " | ".join(f"{r['p50']:.2f} / {r['p99']:.2f}, {r['cpu_us']:.0f}" for r in row)
        lines.append(f"| {int(row[0]['rate'])} | {cells} |")
    return "\n".join(lines)


def render(results: list[ServerResult]) -> str:
    baseline = next(r for r in results if r.server == "baseline")
    header = (
        "| server | wrk req/s (64 conns) | vs baseline | max req/s (generator, 32 in flight) "
        "| vs baseline | p50 / p99 at max (ms) | 70% target req/s | achieved "
        "| p50 / p99 / max at 70% (ms) | errors | server CPU per request at max / at 70% (µs) |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [
        f"| {r.server} | {r.wrk_rps:,.0f} | {r.wrk_rps / baseline.wrk_rps:.2f} | "
        f"{r.max_rps:,.0f} | {r.max_rps / baseline.max_rps:.2f} | "
        f"{r.max_p50_ms:.2f} / {r.max_p99_ms:.2f} | {r.target_rps:,.0f} | "
        f"{r.achieved_rps:,.0f} | {r.p50_ms:.2f} / {r.p99_ms:.2f} / {r.max_ms:.2f} | "
        f"{r.errors} | {r.max_cpu_us:.0f} / {r.paced_cpu_us:.0f} |"
        for r in results
    ]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--generate":
        # The generator's own garbage collections are not the server's latency. A full one
        # stopped the generator for 50-200 ms at these rates (it holds every latency of the
        # run, and every task when it kept them all); the sends it owed then went out in one
        # burst, which queued at the server and reached its p99. A run allocates a bounded
        # amount: no collector.
        gc.disable()
        mode, port, ids_file, amount, seconds = sys.argv[2:7]
        ids = json.loads(Path(ids_file).read_text())
        if mode == "closed":
            run = closed_loop(int(port), ids, int(float(amount)), float(seconds))
        else:
            run = open_loop(int(port), ids, float(amount), float(seconds))
        print(json.dumps(asyncio.run(run)))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--sweep",
        default="1000,2000,3000,4000,6000",
        help="open-model rates (req/s) to measure service, baseline and floor at; empty: none",
    )
    parser.add_argument(
        "--gc-threshold",
        type=int,
        help="the servers' young-generation GC threshold (default: the service's own)",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let every process run on any core (default: the server gets a core of its own)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench_service: needs wrk (apt-get install wrk)")
    if args.gc_threshold is not None:
        os.environ[GC_THRESHOLD_VARIABLE] = str(args.gc_threshold)  # the servers inherit it
    split = None if args.no_pin else split_cores()
    if split is not None:
        os.sched_setaffinity(0, split[1])  # Redis, wrk and the generator inherit it
    with RedisServer() as server, tempfile.TemporaryDirectory() as directory:
        ids = seed(server.port, args.sessions)
        script = wrk_script(ids, Path(directory))
        cores = split[0] if split else None
        results = [measure(kind, server.url, ids, script, args.seconds, cores) for kind in SERVERS]
        rates = [int(rate) for rate in args.sweep.split(",") if rate]
        swept = {
            kind: sweep(kind, server.url, ids, rates, args.seconds, cores)
            for kind in ("service", "baseline", "floor")
            if rates
        }
        # What the generator and the machine alone add at the service's 70% rate: if the
        # floor misses the target there too, the figure above measures the generator.
        service_target = round(results[0].target_rps)
        floor = sweep("floor", server.url, ids, [service_target], args.seconds, cores)[0]
    print(render(results))
    print(
        f"\nfloor at the service's 70% rate ({service_target:,} req/s): "
        f"p50 {floor['p50']:.2f} / p99 {floor['p99']:.2f} ms, {floor['achieved']:,.0f} achieved"
    )
    if swept:
        print()
        print(render_sweep(swept))
    if args.json:
        report = {"servers": [asdict(r) for r in results], "sweep": swept, "floor_at_70": floor}
        write_results(args.json, report)


if __name__ == "__main__":
    main()
