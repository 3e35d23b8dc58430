#!/usr/bin/env python3
"""End-to-end benchmark of redis-audit-proxy (`make bench`). Python 3.11 standard library only.

What it measures
----------------
`redis-benchmark -c 50 -n N -r 100000 -t set,get -P p --csv` against one dedicated redis-server,
directly and through each *arm* (the process in the middle):

  direct           redis-server's plain port: the baseline.
  proxy            this proxy, audit trail on (default settings: async writer, drop on full queue).
  proxy-noaudit    the same binary with `[audit] enabled = false`: the cost of forwarding alone.
  proxy-acl        audit on plus a 20-rule users file in enforce mode (every SET/GET is checked and
                   allowed; the run fails if anything was denied).
  proxy-b          audit on, another binary (--proxy-bin-b) and/or other keys (--set-b): A/B of two
                   builds or configurations in one run.
  proxy-shared     audit on, `upstream.pool = "shared"`: clients share 4 upstream connections.
  proxy-shared-pc  the same with `proxy.runtime = "per_core"` (shared connections per thread).
  proxy-syslog     audit on plus an `[[audit.sinks]]` syslog sink over TLS to a collector in this
                   script that reads and discards: what the copy costs the proxy (its thread's
                   CPU is read on its own too).
  proxy-syslog-stuck  the same sink to a collector that completes the TLS handshake and then never
                   reads (`on_full = "drop"`): the proxy must serve as fast as without it.
  haproxy          HAProxy in TCP mode, one upstream connection per client like this proxy: the
                   reference for what forwarding bytes costs.
  twemproxy        nutcracker, which multiplexes all clients over one Redis connection.
  redis-tls        redis-server's own TLS port.
  proxy-tls-plain  clients -> proxy over TLS, proxy -> Redis plain TCP (the sidecar shape).
  proxy-tls-both   TLS on both sides (`[upstream.tls]` to redis-server's TLS port).
  proxy-tls-plain-shared, proxy-tls-both-shared  the same two with `upstream.pool = "shared"`.
  haproxy-tls      HAProxy terminating TLS, plain TCP to Redis: what a 1:1 proxy that only
                   decrypts and forwards costs, the floor for proxy-tls-plain.

Why this way
------------
redis-benchmark, redis-server and the middle process share the machine's cores, so throughput
follows the total CPU spent per request, and the machine's load varies. Each round runs every arm
once at each pipeline depth, the order rotated each round, so that a slow phase does not always hit
the same arm; figures are medians over the rounds, and ratios are medians of ratios of two arms
measured in the same round. Around each run the CPU time of every process is read (utime + stime
from /proc/<pid>/stat; redis-benchmark's from getrusage of waited-for children) and divided by the
requests: CPU µs per request, which explains throughput and compares across machines. For an
auditing arm the reading after a run waits until its audit files stop growing, so that the writer
thread's work is counted.

Then: the audit trail the `proxy` arm wrote (bytes per record and per SET record), and on a fresh
proxy its memory per idle connection (VmRSS) and its peak for a 64 MiB value (VmHWM); and on a
fresh shared-pool proxy, how many upstream connections serve 10,000 clients that each sent a PING.

Output: target/bench/result.json (command line, machine, every run, medians, ratios, targets), a
plain report on stdout, the part of docs/benchmarks.md between the bench:begin and bench:end
markers, docs/bench/chart.svg and a copy of the JSON beside it (docs/bench/result.json).
`--render-only RESULT.json` re-renders them from a saved result.
"""
from __future__ import annotations

import argparse, contextlib, csv, datetime, io, json, os, platform, resource, shlex, shutil
import signal, socket, ssl, subprocess, sys, tempfile, threading, time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench_report import (ACL_USERS, ALL_ARMS, AUDIT_ARMS, PROXY_ARMS, ROOT, SINK_NAME, SINK_THREAD,
                          TESTS, TLS_ARMS, BenchError, analyse, die, log, render_markdown, write_docs)

def tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


# ---- processes ---------------------------------------------------------------------------------
@dataclass
class Proc:
    name: str
    cmd: list[str]
    popen: subprocess.Popen
    log: Path


@dataclass
class Arm:
    name: str
    port: int = 0                    # where redis-benchmark connects
    tls: bool = False
    middle: Proc | None = None       # the process between redis-benchmark and redis-server
    audit_dir: Path | None = None
    config_file: str = ""
    config: str = ""
    unavailable: str | None = None   # why it could not run (its install failed)


@dataclass
class Run:
    arm: str
    pipeline: int
    round: int
    tests: dict[str, dict[str, float]]   # test -> rps, p50_ms, p99_ms
    cpu_us: dict[str, float | None]      # process -> CPU µs per request
    audit_lag_s: float | None            # how long the audit writer went on after the run
    seconds: float


class Supervisor:
    """Starts servers in the work directory; stops every one of them on exit, whatever happens."""

    def __init__(self, work: Path):
        self.work, self.procs = work, []

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)

    def start(self, name: str, cmd: list[str]) -> Proc:
        path = self.work / f"{name}.log"
        with open(path, "ab") as out:
            popen = subprocess.Popen(cmd, cwd=self.work, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT)
        self.procs.append(Proc(name, cmd, popen, path))
        return self.procs[-1]

    def stop(self, proc: Proc) -> None:
        proc.popen.terminate()
        try:
            proc.popen.wait(15)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()
        self.procs.remove(proc)

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is not None:
                die(f"{proc.name} exited (status {proc.popen.returncode}); its log:\n{tail(proc.log)}")


def free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port


def await_ready(proc: Proc, port: int, tls: ssl.SSLContext | None = None, hint: str = "") -> None:
    """Waits until PING on the port (over TLS with a context) answers PONG; fails after 15 s."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            die(f"{proc.name} exited during startup{hint}; its log:\n{tail(proc.log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2) as sock:
            sock = tls.wrap_socket(sock, server_hostname="localhost") if tls else sock
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            if sock.recv(64).startswith(b"+PONG"):
                return
        time.sleep(0.1)
    die(f"{proc.name} did not answer PING{' over TLS' if tls else ''} on 127.0.0.1:{port} within "
        f"15 s{hint}; its log:\n{tail(proc.log)}")


def cpu_seconds(proc: Proc) -> float:
    """utime + stime of all its threads (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{proc.popen.pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(proc: Proc, name: str) -> float | None:
    """utime + stime of the process's threads called `name` (their /proc comm); None if none."""
    total, found = 0, False
    for task in Path(f"/proc/{proc.popen.pid}/task").iterdir():
        with contextlib.suppress(OSError):
            if (task / "comm").read_text().strip() == name:
                stat = (task / "stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                total, found = total + int(fields[11]) + int(fields[12]), True
    return total / os.sysconf("SC_CLK_TCK") if found else None


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def await_audit_settled(directory: Path) -> float:
    """Waits until the audit files have not grown for 0.3 s; returns when they last grew (s)."""
    start = last_change = time.monotonic()
    previous, stable = -1, 0
    while stable < 3:
        size = 0
        for path in directory.glob("*.log"):
            with contextlib.suppress(FileNotFoundError):  # renamed by a rotation meanwhile
                size += path.stat().st_size
        now = time.monotonic()
        if size != previous:
            previous, stable, last_change = size, -1, now
        stable += 1
        if now - start > 60:
            log(f"warning: {directory} was still growing 60 s after the run")
            break
        time.sleep(0.1)
    return last_change - start


# ---- setting up the arms -----------------------------------------------------------------------
def run_tool(cmd: list[str], what: str, install: str) -> None:
    """Runs a build or install step, its output on stderr; fails loudly, saying how to install."""
    try:
        status = subprocess.run(cmd, cwd=ROOT, stdout=sys.stderr).returncode
    except FileNotFoundError:
        die(f"{cmd[0]} is not installed; it is needed {what}. Install it: {install}")
    if status != 0:
        die(f"`{shlex.join(cmd)}` failed (status {status}); it is needed {what}. By hand: {install}")


def install(name: str) -> str | None:
    """Runs scripts/ensure-NAME.sh; returns why it failed (the arm is then reported unavailable)."""
    done = subprocess.run(["bash", f"scripts/ensure-{name}.sh"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode == 0:
        return None
    reason = (f"scripts/ensure-{name}.sh failed (status {done.returncode}): "
              f"{(done.stderr + done.stdout).strip()[-300:]}")
    log(f"{name} unavailable: {reason}")
    return reason


def first_line(cmd: list[str]) -> str:
    with contextlib.suppress(OSError, IndexError):
        out = subprocess.run(cmd, capture_output=True, text=True)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    return "unknown"


def make_certificates(tls_dir: Path) -> None:
    """A CA and a server certificate for localhost and 127.0.0.1."""
    tls_dir.mkdir()
    (tls_dir / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for args in ("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-CA",
                 "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost",
                 "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem "
                 "-days 2 -extfile san.ext"):
        done = subprocess.run(["openssl", *args.split()], cwd=tls_dir, capture_output=True, text=True)
        if done.returncode != 0:
            die(f"openssl {args} failed:\n{done.stderr}")


def parse_sets(values: list[str]) -> dict[str, dict[str, str]]:
    """`--set audit.coalesce_us=0` -> {"audit": {"coalesce_us": "0"}} (values are TOML literals)."""
    sections: dict[str, dict[str, str]] = {}
    for item in values:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().rpartition(".")
        if not (sep and dot and section and name and value.strip()):
            die(f"--set {item!r}: expected SECTION.KEY=TOML-VALUE, e.g. audit.durability='\"write\"'")
        sections.setdefault(section, {})[name] = value.strip()
    return sections


def proxy_config(arm: str, port: int, upstream: int, tls_port: int | None,
                 extra: dict[str, dict[str, str]], syslog_port: tuple[int, int] | None = None) -> str:
    """The arm's TOML (paths relative to the work directory); its own keys win over --set."""
    q = json.dumps
    own = {"proxy": {"listen": q(f"127.0.0.1:{port}")}, "upstream": {"address": q(f"127.0.0.1:{upstream}")},
           "admin": {"listen": q("127.0.0.1:0")}, "audit": {"dir": q(f"audit-{arm}")}}
    if arm == "proxy-noaudit":
        own["audit"] = {"enabled": "false"}
    if arm == "proxy-acl":
        own |= {"auth": {"users_file": q("users.acl")}, "acl": {"mode": q("enforce")}}
    if arm.startswith("proxy-shared") or arm.endswith("-shared"):
        own["upstream"]["pool"] = q("shared")
    if arm == "proxy-shared-pc":
        own["proxy"]["runtime"] = q("per_core")
    if tls_port:
        own["tls"] = {"listen": q(f"127.0.0.1:{tls_port}"), "cert_file": q("tls/server.pem"),
                      "key_file": q("tls/server.key")}
    if arm.startswith("proxy-tls-both"):
        own["upstream.tls"] = {"ca_file": q("tls/ca.pem"), "server_name": q("localhost")}
    merged = {section: dict(keys) for section, keys in own.items()}
    for section, keys in extra.items():
        for key, value in keys.items():
            merged.setdefault(section, {}).setdefault(key, value)
    text = "".join(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
                   for name, keys in merged.items() if keys)
    if arm.startswith("proxy-syslog") and syslog_port:
        port = syslog_port[1 if arm == "proxy-syslog-stuck" else 0]
        text += (f"[[audit.sinks]]\ntype = \"syslog\"\nname = \"{SINK_NAME}\"\ntransport = \"tls\"\n"
                 f"address = \"127.0.0.1:{port}\"\nca_file = \"tls/ca.pem\"\n"
                 "server_name = \"localhost\"\n")
    return text


def discard_collector(tls_dir: Path, port: int, reads: bool = True) -> None:
    """A TLS syslog collector (a thread) that accepts and reads everything, keeping nothing; or,
    with `reads` false, that completes each TLS handshake and then never reads."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(tls_dir / "server.pem"), str(tls_dir / "server.key"))
    listener = socket.create_server(("127.0.0.1", port))

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError, ssl.SSLError), context.wrap_socket(conn, server_side=True) as tls:
            if not reads:
                threading.Event().wait()
            while tls.recv(1 << 16):
                pass

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def start_middle(sup: Supervisor, arm: Arm, config_file: str, config: str, cmd: list[str],
                 tls: ssl.SSLContext | None = None) -> Proc:
    (sup.work / config_file).write_text(config)
    arm.config, arm.config_file = config, config_file
    arm.middle = sup.start(arm.name, cmd)
    await_ready(arm.middle, arm.port, tls)
    log(f"{arm.name} on 127.0.0.1:{arm.port} (pid {arm.middle.popen.pid})")
    return arm.middle


def start_arms(sup: Supervisor, names: list[str], opts, binaries: dict[str, str],
               ports: set[int]) -> tuple[Proc, dict[str, Arm], dict[str, str]]:
    """Starts redis-server and every arm's middle process; returns them and their versions."""
    work, redis_port, tls_port, client_tls = sup.work, free_port(ports), None, None
    cmd = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--dir", "."]
    syslog_port = None
    syslog_arms = {"proxy-syslog", "proxy-syslog-stuck"}
    if (TLS_ARMS | syslog_arms) & set(names):
        make_certificates(work / "tls")
    if syslog_arms & set(names):
        syslog_port = (free_port(ports), free_port(ports))  # reading, and never reading
        discard_collector(work / "tls", syslog_port[0])
        discard_collector(work / "tls", syslog_port[1], reads=False)
    if TLS_ARMS & set(names):
        tls_port = free_port(ports)
        cmd += ["--tls-port", str(tls_port), "--tls-cert-file", "tls/server.pem", "--tls-key-file",
                "tls/server.key", "--tls-ca-cert-file", "tls/ca.pem", "--tls-auth-clients", "no"]
        client_tls = ssl.create_default_context(cafile=str(work / "tls/ca.pem"))
    redis = sup.start("redis-server", cmd)
    await_ready(redis, redis_port)
    if tls_port:
        await_ready(redis, tls_port, client_tls, " (is redis-server built with TLS? Debian's is)")
    versions = {"redis": "Redis " + first_line(["redis-server", "--version"]).split("v=")[-1].split()[0]}
    (work / "users.acl").write_text(ACL_USERS + "\n")
    arms: dict[str, Arm] = {}
    for name in names:
        arm = arms[name] = Arm(name, tls_port if name == "redis-tls" else redis_port, name in TLS_ARMS)
        if name in PROXY_ARMS:
            arm.port, listen_tls = free_port(ports), free_port(ports) if arm.tls else None
            extra = parse_sets(opts.set + (opts.set_b if name == "proxy-b" else []))
            config = proxy_config(name, arm.port, tls_port if name.startswith("proxy-tls-both") else redis_port,
                                  listen_tls, extra, syslog_port)
            arm.port = listen_tls or arm.port
            arm.audit_dir = work / f"audit-{name}" if name in AUDIT_ARMS else None
            binary = binaries["b" if name == "proxy-b" else "a"]
            proc = start_middle(sup, arm, f"{name}.toml", config, [binary, "--config", f"{name}.toml",
                                "--log-level", "warn"], client_tls if arm.tls else None)
            if name == "proxy-noaudit":  # it must say that it records nothing
                time.sleep(0.2)
                if "audit.enabled = false" not in proc.log.read_text():
                    die(f"proxy-noaudit did not report audit.enabled = false:\n{tail(proc.log)}")
        elif name in ("haproxy", "twemproxy", "haproxy-tls"):
            arm.unavailable = install(name.removesuffix("-tls"))
            if arm.unavailable:
                arm.port = 0
                continue
            arm.port = free_port(ports)
            if name.startswith("haproxy"):  # maxconn must fit the open-file limit or it won't start
                binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
                versions["haproxy"] = first_line([binary, "-v"]).split(" - ")[0]
                maxconn = max(256, min(4096, (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 256) // 2))
                ssl_bind = ""
                if arm.tls:  # HAProxy takes the certificate and its key in one file
                    pem = (work / "tls/server.pem").read_text() + (work / "tls/server.key").read_text()
                    (work / "tls/haproxy.pem").write_text(pem)
                    ssl_bind = " ssl crt tls/haproxy.pem"
                start_middle(sup, arm, f"{name}.cfg",
                             f"global\n    maxconn {maxconn}\ndefaults\n    mode tcp\n"
                             "    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n"
                             f"listen redis\n    bind 127.0.0.1:{arm.port}{ssl_bind}\n"
                             f"    server redis 127.0.0.1:{redis_port}\n",
                             [binary, "-db", "-f", f"{name}.cfg"], client_tls if arm.tls else None)
            else:
                binary = shutil.which("nutcracker") or "/usr/sbin/nutcracker"
                versions[name] = first_line([binary, "-V"]).removeprefix("This is ")
                start_middle(sup, arm, "nutcracker.yml",
                             f"bench:\n  listen: 127.0.0.1:{arm.port}\n  hash: fnv1a_64\n  distribution: "
                             f"ketama\n  redis: true\n  servers:\n    - 127.0.0.1:{redis_port}:1\n",
                             [binary, "-c", "nutcracker.yml", "-s", str(free_port(ports)),
                              "-a", "127.0.0.1"])
    return redis, arms, versions


# ---- measuring ---------------------------------------------------------------------------------
def bench_cmd(arm: Arm, pipeline: int, opts) -> list[str]:
    """redis-benchmark's command line (run from the work directory)."""
    tls = ["--tls", "--cacert", "tls/ca.pem"] if arm.tls else []
    return ["redis-benchmark", *tls, "-h", "127.0.0.1", "-p", str(arm.port), "-c", str(opts.clients),
            "-n", str(opts.requests), "-r", "100000", "-P", str(pipeline), "-t", "set,get", "--csv"]


def measure(sup: Supervisor, redis: Proc, arm: Arm, pipeline: int, rnd: int, opts) -> Run:
    cmd = bench_cmd(arm, pipeline, opts)
    redis0, client0 = cpu_seconds(redis), children_cpu_seconds()
    middle0 = cpu_seconds(arm.middle) if arm.middle else 0.0
    # The audit writer's own thread: the part of the audit's cost that the middle's total, of
    # which it is a few per cent, cannot resolve on a noisy machine.
    writer0 = thread_cpu_seconds(arm.middle, "audit-writer") if arm.audit_dir else None
    sink0 = thread_cpu_seconds(arm.middle, SINK_THREAD) if arm.audit_dir else None
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=sup.work)
    seconds = time.monotonic() - started
    client, redis_cpu = children_cpu_seconds() - client0, cpu_seconds(redis) - redis0
    lag = await_audit_settled(arm.audit_dir) if arm.audit_dir else None
    middle = cpu_seconds(arm.middle) - middle0 if arm.middle else None
    writer = thread_cpu_seconds(arm.middle, "audit-writer") if writer0 is not None else None
    writer = None if writer is None or writer0 is None else writer - writer0
    sink = thread_cpu_seconds(arm.middle, SINK_THREAD) if sink0 is not None else None
    sink = None if sink is None or sink0 is None else sink - sink0
    sup.check_alive()
    if done.returncode != 0:
        die(f"`{shlex.join(cmd)}` failed (status {done.returncode}):\n{done.stderr[-2000:]}")
    for line in done.stderr.splitlines():  # twemproxy refuses CONFIG: a known, harmless warning
        if line.strip() and "Could not fetch server CONFIG" not in line:
            log(f"redis-benchmark: {line}")
    tests = {row["test"]: {"rps": float(row["rps"]), "p50_ms": float(row["p50_latency_ms"]),
                           "p99_ms": float(row["p99_latency_ms"])}
             for row in csv.DictReader(io.StringIO(done.stdout))}
    if set(TESTS) - set(tests):
        die(f"`{shlex.join(cmd)}` printed no {'/'.join(TESTS)} results:\n{done.stdout}")
    per_request = lambda s: None if s is None else s * 1e6 / (len(TESTS) * opts.requests)
    return Run(arm.name, pipeline, rnd, {t: tests[t] for t in TESTS},
               {"redis-server": per_request(redis_cpu), "middle": per_request(middle),
                "redis-benchmark": per_request(client), "audit-writer": per_request(writer),
                SINK_THREAD: per_request(sink)},
               lag, seconds)


def scan_audit(directory: Path) -> dict:
    """Lines, bytes and records of an audit directory, SET command lines apart."""
    stats = dict.fromkeys(("files", "lines", "bytes", "command_records", "set_lines", "set_bytes",
                           "lost_records", "acl_denied"), 0)
    for path in sorted(directory.glob("*.log")):
        stats["files"] += 1
        with open(path, "rb") as f:
            for line in f:
                stats["lines"] += 1
                stats["bytes"] += len(line)
                if b'"kind":"command"' in line:
                    stats["command_records"] += 1
                    if b'"command":{"name":"set"' in line:
                        stats["set_lines"] += 1
                        stats["set_bytes"] += len(line)
                elif b'"action":"loss"' in line:
                    stats["lost_records"] += json.loads(line)["lost"]["count"]
                elif b'"action":"acl_denied"' in line:
                    stats["acl_denied"] += 1
    stats["bytes_per_record"] = stats["bytes"] / stats["lines"] if stats["lines"] else None
    stats["bytes_per_set_line"] = stats["set_bytes"] / stats["set_lines"] if stats["set_lines"] else None
    return stats


def status_kib(proc: Proc, key: str) -> int:
    for line in Path(f"/proc/{proc.popen.pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    die(f"{key} is not in /proc/{proc.popen.pid}/status")


def idle_memory(proc: Proc, port: int, count: int) -> dict:
    """VmRSS of a fresh proxy before, with `count` idle clients, and after one PING each."""
    fds = lambda: len(os.listdir(f"/proc/{proc.popen.pid}/fd"))
    rss0, fds0, deadline = status_kib(proc, "VmRSS"), fds(), time.monotonic() + 60
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    try:
        while fds() < fds0 + 2 * count:  # each client and its upstream connection
            if time.monotonic() > deadline:
                die(f"the proxy holds {fds() - fds0} new descriptors, expected {2 * count}")
            time.sleep(0.05)
        time.sleep(1.0)
        rss_connected = status_kib(proc, "VmRSS")
        for s in socks:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
        for s in socks:
            got = b""
            while not got.endswith(b"\r\n"):
                got += s.recv(64) or die("the proxy closed an idle connection")
            if got != b"+PONG\r\n":
                die(f"PING: unexpected reply {got!r}")
        time.sleep(1.0)
        rss_ping = status_kib(proc, "VmRSS")
    finally:
        for s in socks:
            s.close()
    return {"connections": count, "rss_before_kib": rss0, "rss_connected_kib": rss_connected,
            "rss_after_ping_kib": rss_ping, "kib_per_conn_connected": (rss_connected - rss0) / count,
            "kib_per_conn_after_ping": (rss_ping - rss0) / count}


def big_value_memory(proc: Proc, port: int, mib: int) -> dict:
    """VmHWM of a fresh proxy around a SET then a GET of a `mib` MiB value."""
    size = mib << 20
    payload = bytes(range(256)) * (size // 256)
    hwm0, rss0 = status_kib(proc, "VmHWM"), status_kib(proc, "VmRSS")
    with socket.create_connection(("127.0.0.1", port)) as s, s.makefile("rb", buffering=1 << 20) as r:
        started = time.monotonic()
        s.sendall(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n" % size + payload + b"\r\n")
        if (reply := r.readline()) != b"+OK\r\n":
            die(f"SET big: unexpected reply {reply[:200]!r}")
        set_seconds, hwm_set = time.monotonic() - started, status_kib(proc, "VmHWM")
        started = time.monotonic()
        s.sendall(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n")
        if (header := r.readline()) != b"$%d\r\n" % size:
            die(f"GET big: unexpected reply {header[:200]!r}")
        if r.read(size + 2) != payload + b"\r\n":
            die("GET big: the value came back different")
        get_seconds, hwm_get = time.monotonic() - started, status_kib(proc, "VmHWM")
    time.sleep(1.0)
    return {"mib": mib, "hwm_before_kib": hwm0, "rss_before_kib": rss0, "hwm_after_set_kib": hwm_set,
            "hwm_after_get_kib": hwm_get, "rss_after_kib": status_kib(proc, "VmRSS"),
            "set_seconds": set_seconds, "get_seconds": get_seconds,
            "peak_multiple": (hwm_get - hwm0) / 1024 / mib}


def redis_clients(port: int) -> list[str]:
    """CLIENT LIST of the redis-server on `port`, one line per connection (this one included)."""
    with socket.create_connection(("127.0.0.1", port)) as s, s.makefile("rb") as r:
        s.sendall(b"*2\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n")
        header = r.readline()
        if not header.startswith(b"$"):
            die(f"CLIENT LIST: unexpected reply {header[:200]!r}")
        return r.read(int(header[1:]) + 2).decode().split("\n")[:-1]


def shared_fanin(sup: Supervisor, binary: str, redis_port: int, ports: set[int], opts) -> dict:
    """A fresh `pool = "shared"` proxy: `count` clients each PING and stay connected; how many
    connections Redis then has from the proxy."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    count = min(opts.fanin_clients, soft - 512)  # one descriptor here and one in the proxy each
    port, name = free_port(ports), "proxy-shared-fanin"
    config = proxy_config("proxy-shared", port, redis_port, None, parse_sets(opts.set))
    (sup.work / f"{name}.toml").write_text(config.replace("audit-proxy-shared", "audit-fanin"))
    proc = sup.start(name, [binary, "--config", f"{name}.toml", "--log-level", "warn"])
    await_ready(proc, port)
    time.sleep(1.0)  # the start-up's command-table connection closes
    log(f"{count} clients, each sending a PING, through a fresh shared-pool proxy")
    socks = []
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            socks.append(s)
        for s in socks:
            got = b""
            while not got.endswith(b"\r\n"):
                got += s.recv(64) or die("the shared-pool proxy closed a client")
            if got != b"+PONG\r\n":
                die(f"PING through the shared pool: unexpected reply {got!r}")
        lines = redis_clients(redis_port)
        upstream = len(lines) - 1  # every arm stopped: all but this one are the proxy's
        named = sum("name=redis-audit-proxy-shared" in line for line in lines)
    finally:
        for s in socks:
            s.close()
        sup.stop(proc)
    return {"clients": count, "upstream_connections": upstream, "named_shared": named}


def memory_tests(sup: Supervisor, binary: str, redis_port: int, ports: set[int], opts) -> dict:
    """Each test on a fresh auditing proxy configured as the `proxy` arm."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    result = {}
    for test in ("idle", "big"):
        port, name = free_port(ports), f"proxy-{test}"
        config = proxy_config(name, port, redis_port, None, parse_sets(opts.set))
        (sup.work / f"{name}.toml").write_text(config)
        proc = sup.start(name, [binary, "--config", f"{name}.toml", "--log-level", "warn"])
        await_ready(proc, port)
        time.sleep(1.0)
        if test == "idle":
            count = min(opts.idle_conns, (soft - 256) // 2)  # two descriptors per proxied client
            log(f"opening {count} idle connections to a fresh proxy")
            result[test] = idle_memory(proc, port, count)
        else:
            log(f"SET/GET of a {opts.big_mib} MiB value through a fresh proxy")
            result[test] = big_value_memory(proc, port, opts.big_mib)
        sup.stop(proc)
    return result


# ---- one run -----------------------------------------------------------------------------------
def prepare(opts) -> dict[str, str]:
    """Installs what is missing and builds the proxy; returns the binaries of arms a and b."""
    run_tool(["bash", "scripts/ensure-redis.sh"], "for every arm (redis-server, redis-benchmark, openssl)",
             "apt-get install redis-server redis-tools openssl")
    binary = opts.proxy_bin
    if not binary:
        log("building the proxy (cargo build --release)")
        run_tool(["cargo", "build", "--release"], "to build the proxy (or pass --proxy-bin PATH)",
                 "Rust from https://rustup.rs")
        binary = ROOT / "target/release/redis-audit-proxy"
    binaries = {"a": str(Path(binary).resolve()), "b": str(Path(opts.proxy_bin_b or binary).resolve())}
    for path in set(binaries.values()):
        if not os.access(path, os.X_OK):
            die(f"{path} is not an executable proxy binary")
    return binaries


def run_bench(opts) -> dict:
    """Every round of every arm, the audit trails, the memory tests: the raw part of the result."""
    binaries = prepare(opts)
    with contextlib.suppress(ValueError, OSError):  # children inherit it: proxies, HAProxy, ...
        resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    work = Path(tempfile.mkdtemp(prefix="redis-audit-proxy-bench."))
    need = len(AUDIT_ARMS & set(opts.arms)) * 2 * opts.requests * opts.rounds * len(opts.pipelines) * 800
    ports: set[int] = set()
    result: dict = {"binaries": {k: v.replace(str(ROOT) + "/", "") for k, v in binaries.items()}, "runs": []}
    try:
        if shutil.disk_usage(work).free < need + (1 << 30):
            die(f"{work}: the audit trails need about {need >> 30} GiB free "
                "(set TMPDIR, or use fewer --requests)")
        with Supervisor(work) as sup:
            redis, arms, result["versions"] = start_arms(sup, opts.arms, opts, binaries, ports)
            ready = [name for name in opts.arms if not arms[name].unavailable]
            if not ready:
                die("none of the requested arms could run (see the reasons above)")
            started = time.monotonic()
            for rnd in range(1, opts.rounds + 1):
                order = ready[(rnd - 1) % len(ready):] + ready[:(rnd - 1) % len(ready)]
                for pipeline in opts.pipelines:
                    for name in order:
                        log(f"round {rnd}/{opts.rounds}, pipeline {pipeline}, {name}")
                        result["runs"].append(asdict(measure(sup, redis, arms[name], pipeline, rnd, opts)))
            log(f"redis-benchmark runs took {time.monotonic() - started:.0f} s")
            shown = lambda cmd: shlex.join(cmd).replace(str(ROOT) + "/", "")
            result["arms"] = {name: {"port": a.port, "tls": a.tls, "config_file": a.config_file,
                                     "config": a.config,
                                     "command": shown(a.middle.cmd) if a.middle else None,
                                     "unavailable": a.unavailable} for name, a in arms.items()}
            result["redis_command"] = shown(redis.cmd)
            result["commands"] = [shown(bench_cmd(arms[a], p, opts)) for p in opts.pipelines for a in ready]
            if "proxy" in ready:
                await_audit_settled(arms["proxy"].audit_dir)
                result["audit"] = scan_audit(arms["proxy"].audit_dir)
                result["audit"]["sent"] = 2 * opts.requests * opts.rounds * len(opts.pipelines)
            if "proxy-acl" in ready:
                result["acl"] = scan_audit(arms["proxy-acl"].audit_dir)
            for arm in arms.values():
                if arm.middle:
                    sup.stop(arm.middle)
            if not opts.skip_memory:
                result["memory"] = memory_tests(sup, binaries["a"], int(redis.cmd[2]), ports, opts)
            if opts.fanin_clients:
                result["shared_fanin"] = shared_fanin(sup, binaries["a"], int(redis.cmd[2]), ports, opts)
    finally:
        if opts.keep_work:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return result


# ---- command line ------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    def positive(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
        return int(text)

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", help=f"comma-separated subset of {','.join(ALL_ARMS)} (default: all; proxy-b "
                                  "only with --proxy-bin-b or --set-b)")
    p.add_argument("--pipelines", type=lambda t: [positive(x) for x in t.split(",")], default=[1, 16],
                   help="pipeline depths (default 1,16)")
    for flag, default, what in (("--requests", 200000, "requests per test and run"),
                                ("--rounds", 3, "rounds, each running every arm once"),
                                ("--clients", 50, "redis-benchmark clients"),
                                ("--idle-conns", 2000, "clients of the idle-memory test"),
                                ("--big-mib", 64, "size of the big value, MiB")):
        p.add_argument(flag, type=positive, default=default, help=f"{what} (default {default})")
    p.add_argument("--fanin-clients", type=int, default=10_000,
                   help="clients of the shared-pool fan-in test, 0 to skip it (default 10000)")
    p.add_argument("--skip-memory", action="store_true", help="skip the idle-connection and big-value tests")
    p.add_argument("--skip-tls", action="store_true", help="leave the TLS arms out")
    p.add_argument("--proxy-bin", help="proxy binary (default: cargo build --release and its binary)")
    p.add_argument("--proxy-bin-b", help="binary of an extra arm proxy-b (audit on), for A/B in one run")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config key for every proxy arm, the value in TOML (audit.coalesce_us=0, "
                        "audit.durability='\"write\"'); repeatable")
    p.add_argument("--set-b", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config key for the proxy-b arm only (adds that arm); repeatable")
    p.add_argument("--output", type=Path, default=ROOT / "target/bench/result.json",
                   help="where to write the result (default target/bench/result.json)")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md and the chart")
    p.add_argument("--keep-work", action="store_true", help="keep the work directory (logs, audit trails)")
    p.add_argument("--render-only", type=Path, metavar="RESULT.json", help="only render a saved result")
    opts = p.parse_args(argv)
    names = opts.arms.split(",") if opts.arms else [
        a for a in ALL_ARMS if a != "proxy-b" or opts.proxy_bin_b or opts.set_b]
    if unknown := set(names) - set(ALL_ARMS):
        p.error(f"unknown arm(s) {', '.join(sorted(unknown))}; known: {', '.join(ALL_ARMS)}")
    opts.arms = [a for a in ALL_ARMS if a in names and not (opts.skip_tls and a in TLS_ARMS)]
    if not opts.arms and not opts.render_only:
        p.error("no arm left to run")
    try:
        parse_sets(opts.set + opts.set_b)
    except BenchError as error:
        p.error(str(error))
    return opts


def describe() -> dict:
    """The command line, date, commit and machine of this run."""
    git = lambda *args: subprocess.run(["git", *args], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip()
    modified = git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    return {"command_line": shlex.join(["scripts/bench.py", *sys.argv[1:]]),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
            "git": (git("rev-parse", "--short", "HEAD") or "unknown") + (" (modified)" if modified else ""),
            "machine": {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
                        "rustc": first_line(["rustc", "--version"])}}


def main(argv: list[str]) -> int:
    def on_signal(signum: int, _frame) -> None:
        log(f"stopped by signal {signum}; stopping every process started")
        sys.exit(128 + signum)  # unwinds through the Supervisor

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    opts = parse_args(argv)
    try:
        if opts.render_only:
            result = analyse(json.loads(opts.render_only.read_text()))
        else:
            settings = {k: getattr(opts, k) for k in ("arms", "pipelines", "requests", "rounds", "clients",
                                                      "idle_conns", "big_mib", "fanin_clients", "set", "set_b",
                                                      "proxy_bin_b")}
            result = analyse(describe() | {"settings": settings} | run_bench(opts))
            opts.output.parent.mkdir(parents=True, exist_ok=True)
            opts.output.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
            log(f"wrote {opts.output}")
        print(render_markdown(result, False))
        if not opts.no_docs:
            write_docs(result)
        if denied := (result.get("acl") or {}).get("acl_denied"):
            die(f"the proxy-acl arm denied {denied} commands: its users file does not fit the benchmark")
    except BenchError as error:
        log(f"error: {error}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
