#!/usr/bin/env python3
"""Redis Cluster through per-node sidecars (`make bench` runs it after bench.py; issue 16).

A 3-node cluster (`redis-cli --cluster create`) with an auditing proxy in front of each node in
`cluster.mode = "sidecar"`, and beside it one plain redis-server with one auditing proxy.
`redis-benchmark --cluster -c 50 -n N -r 100000 -t set,get` runs against the cluster directly
and through the sidecars, and plain `redis-benchmark` against the single server directly and
through its proxy; each round runs the four in a rotated order. The figure is the ratio of the
sidecars to the direct cluster, next to the single proxy's ratio to its direct server, medians
of the per-round ratios: the target is the first ≥ the second (the rewrite runs only on
-MOVED/-ASK and topology replies, so sidecars should cost what one proxy costs).

Output: a plain report on stdout and target/bench/cluster.json.
Usage: python3 scripts/bench_cluster.py [--proxy-bin PATH] [--requests N] [--rounds R]
"""
from __future__ import annotations

import argparse, csv, io, json, statistics, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import Supervisor, free_port  # noqa: E402
from bench_report import ROOT, die, log  # noqa: E402

NODES = 3


def wait_port(port: int) -> None:
    for _ in range(200):
        if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode == 0:
            return
        time.sleep(0.05)
    die(f"nothing answers on {port}")


def cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is a port too, and free."""
    while True:
        port = free_port(taken)
        if port + 10000 <= 65535 and port + 10000 not in taken:
            taken.update((port, port + 10000))
            return port


def redis(sup: Supervisor, name: str, port: int, *extra: str):
    proc = sup.start(name, ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", str(sup.work), *extra])
    wait_port(port)
    return proc


def proxy(sup: Supervisor, binary: str, name: str, port: int, upstream: int, extra: str, ports):
    config = sup.work / f"{name}.toml"
    config.write_text(f'[proxy]\nlisten = "127.0.0.1:{port}"\n[upstream]\naddress = "127.0.0.1:{upstream}"\n'
                      f'[admin]\nlisten = "127.0.0.1:{free_port(ports)}"\n'
                      f'[audit]\ndir = "{sup.work / name}-audit"\n{extra}')
    proc = sup.start(name, [binary, "--config", str(config), "--log-level", "warn"])
    wait_port(port)
    return proc


def bench(sup: Supervisor, port: int, cluster: bool, opts) -> dict[str, float]:
    cmd = ["redis-benchmark", *(["--cluster"] if cluster else []), "-h", "127.0.0.1", "-p", str(port),
           "-c", "50", "-n", str(opts.requests), "-r", "100000", "-t", "set,get", "--csv"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=sup.work)
    sup.check_alive()
    if done.returncode != 0:
        die(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    # With --cluster, the CSV follows a description of the nodes.
    table = done.stdout[done.stdout.find('"test"'):]
    return {row["test"]: float(row["rps"]) for row in csv.DictReader(io.StringIO(table))}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proxy-bin", help="proxy binary (default: cargo build --release and its binary)")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args(argv)
    binary = str(Path(opts.proxy_bin).resolve()) if opts.proxy_bin else None
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        binary = str(ROOT / "target/release/redis-audit-proxy")
    with tempfile.TemporaryDirectory(prefix="rap-bench-cluster-") as work, Supervisor(Path(work)) as sup:
        ports: set[int] = set()
        nodes = [cluster_port(ports) for _ in range(NODES)]
        ports.update(nodes)
        for i, port in enumerate(nodes):
            redis(sup, f"node{i}", port, "--cluster-enabled", "yes", "--cluster-config-file",
                  f"nodes-{i}.conf")
        created = subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in nodes],
                                  "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True)
        if created.returncode != 0:
            die(f"redis-cli --cluster create failed:\n{created.stdout}")
        for port in nodes:
            for _ in range(200):
                info = subprocess.run(["redis-cli", "-p", str(port), "cluster", "info"],
                                      capture_output=True, text=True).stdout
                if "cluster_state:ok" in info:
                    break
                time.sleep(0.05)
        sidecars = [free_port(ports) for _ in range(NODES)]
        ports.update(sidecars)
        announce = "".join(f'"127.0.0.1:{n}" = "127.0.0.1:{s}"\n' for n, s in zip(nodes, sidecars))
        cluster_toml = f'[cluster]\nmode = "sidecar"\n[cluster.announce]\n{announce}'
        for i, (node, sidecar) in enumerate(zip(nodes, sidecars)):
            proxy(sup, binary, f"sidecar{i}", sidecar, node, cluster_toml, ports)
        single = free_port(ports)
        ports.add(single)
        redis(sup, "single", single)
        single_proxy = free_port(ports)
        ports.add(single_proxy)
        proxy(sup, binary, "single-proxy", single_proxy, single, "", ports)

        arms = {"cluster-direct": (nodes[0], True), "cluster-sidecars": (sidecars[0], True),
                "single-direct": (single, False), "single-proxy": (single_proxy, False)}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in arms}
        names = list(arms)
        for rnd in range(opts.rounds):
            for name in names[rnd % len(names):] + names[:rnd % len(names)]:
                log(f"round {rnd + 1}/{opts.rounds}, {name}")
                port, cluster = arms[name]
                results[name].append(bench(sup, port, cluster, opts))
    report = {"command": " ".join(["scripts/bench_cluster.py", *argv]), "requests": opts.requests,
              "rounds": opts.rounds, "runs": results, "ratios": {}}
    print(f"Redis Cluster through sidecars: {opts.rounds} rounds of redis-benchmark -c 50 -n {opts.requests}"
          " -r 100000 -t set,get (--cluster for the cluster arms); medians of per-round ratios")
    print(f"{'test':6} {'sidecars / cluster':>20} {'proxy / single':>16} {'met':>5}")
    for test in ("SET", "GET"):
        per_round = lambda a, b: [x[test] / y[test] for x, y in zip(results[a], results[b])]
        sidecars = per_round("cluster-sidecars", "cluster-direct")
        single = per_round("single-proxy", "single-direct")
        sidecars_ratio, single_ratio = statistics.median(sidecars), statistics.median(single)
        report["ratios"][test] = {"sidecars_to_cluster": sidecars, "proxy_to_single": single}
        shown = lambda ratios: ", ".join(f"{r:.2f}" for r in ratios)
        print(f"{test:6} {sidecars_ratio:>20.2f} {single_ratio:>16.2f} "
              f"{'yes' if sidecars_ratio >= single_ratio else 'no':>5}   per round: "
              f"{shown(sidecars)} | {shown(single)}")
    for name, runs in results.items():
        print(f"  {name:17} " + ", ".join(f"SET {r['SET']:,.0f} GET {r['GET']:,.0f}" for r in runs))
    out = ROOT / "target/bench/cluster.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
