#!/usr/bin/env python3
"""User and system CPU per request of each process (Redis, the middle process and its audit
writer thread, redis-benchmark), for arms already running, alternating, rotated each round.

    python3 scripts/cpu_split.py --redis-port 7600 --rounds 5 --requests 200000 --pipeline 1 \\
        direct=7600 shared=7601:PID twemproxy=7609:PID

An arm is NAME=PORT[:PID]: redis-benchmark runs `-c 50 -r 100000 -t set,get` against PORT; PID
is the middle process (none for Redis itself). Figures are medians over the rounds, in µs per
request; what `scripts/bench.py` reads as one number (utime + stime) split in two, and the
writer thread (`audit-writer`) read apart. Where `scripts/bench.py` answers "how fast", this
answers "where the CPU goes": the kernel's part (system calls, loopback TCP) against the user
space's. Python 3.11 standard library only.
"""
from __future__ import annotations

import argparse, os, resource, statistics, subprocess

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int | None, thread: str | None = None) -> tuple[float, float]:
    """(user, system) seconds of a process, or of its threads named `thread`."""
    if not pid:
        return (0.0, 0.0)
    paths = [f"/proc/{pid}/stat"] if thread is None else [
        f"/proc/{pid}/task/{t}/stat" for t in os.listdir(f"/proc/{pid}/task")
        if open(f"/proc/{pid}/task/{t}/comm").read().strip() == thread]
    user = system = 0.0
    for path in paths:
        fields = open(path).read().rsplit(")", 1)[1].split()
        user, system = user + int(fields[11]) / TICK, system + int(fields[12]) / TICK
    return (user, system)


def children() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime, usage.ru_stime)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis-port", type=int, required=True, help="the redis-server all arms end at")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=200000, help="per test (SET, GET)")
    p.add_argument("--pipeline", type=int, default=1)
    p.add_argument("arms", nargs="+", metavar="NAME=PORT[:PID]")
    opts = p.parse_args()
    redis = int(subprocess.check_output(["pgrep", "-f", f"redis-server .*:{opts.redis_port}"]).split()[0])
    arms = []
    for spec in opts.arms:
        name, _, where = spec.partition("=")
        port, _, pid = where.partition(":")
        arms.append((name, port, int(pid) if pid else None))
    parts = ("redis", "middle", "writer", "bench")
    runs: dict[str, list[dict]] = {}
    for round_ in range(opts.rounds):
        for name, port, pid in arms[round_ % len(arms):] + arms[:round_ % len(arms)]:
            read = lambda: {"redis": cpu(redis), "middle": cpu(pid), "writer": cpu(pid, "audit-writer"),
                            "bench": children()}
            before = read()
            done = subprocess.run(["redis-benchmark", "-p", port, "-c", "50", "-n", str(opts.requests),
                                   "-r", "100000", "-P", str(opts.pipeline), "-t", "set,get", "--csv"],
                                  capture_output=True, text=True, check=True)
            after = read()
            requests = 2 * opts.requests
            run = {part: tuple((b - a) * 1e6 / requests for a, b in zip(before[part], after[part]))
                   for part in parts}
            run["rps"] = statistics.mean(float(line.split(",")[1].strip('"'))
                                         for line in done.stdout.splitlines()[1:])
            runs.setdefault(name, []).append(run)
            print(f"round {round_ + 1} {name}: {run['rps']:,.0f} rps, " + ", ".join(
                f"{part} {run[part][0]:.2f} + {run[part][1]:.2f}" for part in parts), flush=True)
    print(f"\nmedians over {opts.rounds} rounds, pipeline {opts.pipeline}, µs per request (user + system):")
    for name, rows in runs.items():
        median = lambda f: statistics.median(f(row) for row in rows)
        total = median(lambda row: sum(sum(row[part]) for part in ("redis", "middle", "bench")))
        print(f"{name:>12}: {median(lambda row: row['rps']):>9,.0f} rps; " + "; ".join(
            f"{part} {median(lambda row: row[part][0]):.2f} + {median(lambda row: row[part][1]):.2f}"
            for part in parts) + f"; all processes {total:.2f}")


if __name__ == "__main__":
    main()
