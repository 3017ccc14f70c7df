"""Profile the daemon's request path under the fan-out benchmark's closed-loop load.

Usage::

    python benchmarks/profile_hot.py [--scenario f3] [--seconds 10] [--top 25] [--raw out.txt]

Starts the same stack as ``benchmarks/fanout.py`` (embedded NATS, fake providers, the
floor and the daemon), drives the daemon alone with ``--concurrency`` closed-loop
requesters, and samples the daemon with ``py-spy record`` (``pip install py-spy``;
non-blocking, so the sampling barely slows the daemon) over the measured window. Prints
the daemon's CPU time per request and the top functions by self and by cumulative time,
each as a share of the samples and as microseconds of CPU per request (the share times the
measured CPU per request).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from fanout import DEFAULT_LOOP, Proc, start_stack
from fanout_load import closed_loop, cpu_seconds

from alchemist.daemon.storage.broker import EmbeddedNats


def parse_raw(text: str) -> tuple[Counter[str], Counter[str], int]:
    """py-spy's raw (collapsed) stacks -> samples by leaf function, by any frame, and total."""
    self_t: Counter[str] = Counter()
    cum_t: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        self_t[frames[-1]] += n
        for frame in set(frames):
            cum_t[frame] += n
    return self_t, cum_t, total


def table(title: str, counts: Counter[str], total: int, us_per_req: float, top: int) -> str:
    rows = [f"\n{title}", f"{'share':>7} {'us/req':>7}  function"]
    for frame, n in counts.most_common(top):
        share = n / max(1, total)
        rows.append(f"{100 * share:>6.1f}% {share * us_per_req:>7.1f}  {frame}")
    return "\n".join(rows)


def start_spy(args: argparse.Namespace, pid: int, raw: Path) -> subprocess.Popen[str]:
    """py-spy sampling ``pid`` for ``args.seconds`` into ``raw`` (collapsed stacks)."""
    return subprocess.Popen(
        [args.py_spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)),
         "--rate", str(args.rate), "--format", "raw", "--nonblocking", "--nolineno",
         "--output", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def report(args: argparse.Namespace, raw: Path, ok: int, errors: int, cpu: float) -> str:
    """The profile as text: CPU per request, then the top functions."""
    self_t, cum_t, total = parse_raw(raw.read_text())
    us = 1e6 * cpu / max(1, ok)
    head = (f"daemon ({args.event_loop}), {args.scenario}, {args.concurrency} requesters, "
            f"{args.seconds:g} s: "
            f"{ok} requests ({ok / args.seconds:.0f}/s), {errors} errors, "
            f"CPU {us:.0f} us per request; {total} samples")
    return "\n".join([head, table("self time (top)", self_t, total, us, args.top),
                      table("cumulative time (top)", cum_t, total, us, args.top)])


async def profile(args: argparse.Namespace, raw: Path) -> tuple[int, int, float]:
    """Drive the daemon and sample it; returns requests, errors and its CPU seconds."""
    work = Path(tempfile.mkdtemp(prefix="profile-hot-"))
    procs: list[Proc] = []
    broker = EmbeddedNats(work / "nats")
    stack = None
    try:
        stack = await start_stack(work, broker, procs, "info", args.event_loop)
        pid = stack.daemon.popen.pid
        pids = {"responder": pid}
        await closed_loop(stack.nc, "daemon", args.scenario, args.concurrency, 0.0, 2.0, pids)
        spy = start_spy(args, pid, raw)
        cpu0 = cpu_seconds(pid)
        result = await closed_loop(stack.nc, "daemon", args.scenario, args.concurrency, 0.0,
                                   args.seconds, pids)
        cpu = cpu_seconds(pid) - cpu0
        _, err = await asyncio.to_thread(spy.communicate, None, 60)
        if spy.returncode:
            raise RuntimeError(f"py-spy failed ({spy.returncode}): {err.strip()[-500:]}")
    finally:
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.nc.close()
        for p in reversed(procs):
            await p.stop()
        await broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    return result.ok, result.errors, cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--scenario", default="f3", choices=("f3", "f8", "tail"))
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--event-loop", default=DEFAULT_LOOP, choices=("uvloop", "asyncio"))
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    ap.add_argument("--py-spy", default=shutil.which("py-spy") or str(Path(sys.executable).parent
                                                                      / "py-spy"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        raw = args.raw or Path(tmp) / "daemon.raw"
        ok, errors, cpu = asyncio.run(profile(args, raw))
        print(report(args, raw, ok, errors, cpu))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
