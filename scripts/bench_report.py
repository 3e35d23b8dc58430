"""Analysis and rendering for scripts/bench.py: the medians and the paired ratios of a result,
the project's targets, and the generated part of docs/benchmarks.md with its chart
(docs/bench/chart.svg). Python 3.11 standard library only."""
from __future__ import annotations

import html, json, statistics, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs/benchmarks.md"
CHART, DOC_JSON = ROOT / "docs/bench/chart.svg", ROOT / "docs/bench/result.json"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
ALL_ARMS = ["direct", "proxy", "proxy-noaudit", "proxy-acl", "proxy-b", "proxy-shared",
            "proxy-shared-pc", "proxy-syslog", "proxy-syslog-stuck", "haproxy", "twemproxy", "redis-tls", "proxy-tls-plain",
            "proxy-tls-both", "proxy-tls-plain-shared", "proxy-tls-both-shared", "haproxy-tls"]
TLS_ARMS = {"redis-tls", "proxy-tls-plain", "proxy-tls-both", "proxy-tls-plain-shared",
            "proxy-tls-both-shared", "haproxy-tls"}
AUDIT_ARMS = {"proxy", "proxy-acl", "proxy-b", "proxy-shared", "proxy-shared-pc", "proxy-syslog",
              "proxy-syslog-stuck", "proxy-tls-plain", "proxy-tls-both", "proxy-tls-plain-shared",
              "proxy-tls-both-shared"}
# The sink of the proxy-syslog arms, and its thread's name (/proc comm: 15 bytes at most).
SINK_NAME, SINK_THREAD = "siem", "audit-sink-siem"
PROXY_ARMS = AUDIT_ARMS | {"proxy-noaudit"}
TESTS, PROCS = ("SET", "GET"), ("redis-server", "middle", "redis-benchmark")
ACL_USERS = ("user default on nopass ~key:* ~counter:* %R~cache:* %W~out:* &bench:* -@all +@read "
             "+@string +@hash +@list +@connection -getdel +select|0 +config|get -flushall "
             "(~s? +@stream) (~other:* +mget)")
DASH = "—"
# (name, numerator arm, denominator arm, metric): "rps" gives one ratio per test; "cpu" compares
# the middle processes' µs/request, "cpu-diff" subtracts them, "cpu-redis" compares redis-server's.
RATIOS = [("proxy/direct", "proxy", "direct", "rps"),
          ("proxy-noaudit/direct", "proxy-noaudit", "direct", "rps"),
          ("haproxy/direct", "haproxy", "direct", "rps"),
          ("twemproxy/direct", "twemproxy", "direct", "rps"),
          ("proxy-shared/direct", "proxy-shared", "direct", "rps"),
          ("proxy-shared-pc/direct", "proxy-shared-pc", "direct", "rps"),
          ("proxy-shared/proxy CPU", "proxy-shared", "proxy", "cpu"),
          ("proxy-shared-pc/proxy CPU", "proxy-shared-pc", "proxy", "cpu"),
          ("redis CPU: proxy-shared/proxy", "proxy-shared", "proxy", "cpu-redis"),
          ("redis CPU: proxy-shared-pc/proxy", "proxy-shared-pc", "proxy", "cpu-redis"),
          ("audit on/off", "proxy", "proxy-noaudit", "rps"),
          ("audit CPU µs/request (proxy − proxy-noaudit)", "proxy", "proxy-noaudit", "cpu-diff"),
          ("proxy-acl/proxy", "proxy-acl", "proxy", "rps"),
          ("syslog sink CPU µs/request (proxy-syslog − proxy)", "proxy-syslog", "proxy", "cpu-diff"),
          ("proxy-syslog-stuck/proxy", "proxy-syslog-stuck", "proxy", "rps"),
          ("proxy-b/proxy", "proxy-b", "proxy", "rps"),
          ("proxy-b/proxy CPU", "proxy-b", "proxy", "cpu"),
          ("proxy-noaudit/haproxy CPU", "proxy-noaudit", "haproxy", "cpu"),
          ("proxy-tls-plain/redis-tls", "proxy-tls-plain", "redis-tls", "rps"),
          ("proxy-tls-both/redis-tls", "proxy-tls-both", "redis-tls", "rps"),
          ("proxy-tls-plain-shared/redis-tls", "proxy-tls-plain-shared", "redis-tls", "rps"),
          ("proxy-tls-both-shared/redis-tls", "proxy-tls-both-shared", "redis-tls", "rps"),
          ("haproxy-tls/redis-tls", "haproxy-tls", "redis-tls", "rps"),
          ("proxy-tls-plain/haproxy-tls CPU", "proxy-tls-plain", "haproxy-tls", "cpu")]


class BenchError(Exception):
    """A failure with a message for the user; every process started is stopped."""


def die(message: str):
    raise BenchError(message)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---- analysis ----------------------------------------------------------------------------------
def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def paired(runs: list[dict], num: str, den: str, pipeline: int, metric: str) -> list[float]:
    """For each round in which both arms ran: num / den (num − den for "cpu-diff")."""
    proc = "redis-server" if metric == "cpu-redis" else "middle"
    value = lambda run: run["cpu_us"][proc] if metric.startswith("cpu") else run["tests"][metric]["rps"]
    rounds: dict[int, dict[str, dict]] = {}
    for run in runs:
        if run["pipeline"] == pipeline:
            rounds.setdefault(run["round"], {})[run["arm"]] = run
    out = []
    for arms in rounds.values():
        a, b = (value(arms[x]) if x in arms else None for x in (num, den))
        if a is not None and b is not None:
            if metric == "cpu-diff":
                out.append(a - b)
            elif b:
                out.append(a / b)
    return out


def analyse(result: dict) -> dict:
    """Adds the medians per arm and pipeline, the paired ratios and the targets to a result."""
    runs, pipelines = result["runs"], result["settings"]["pipelines"]
    medians: dict[str, dict] = {}
    for arm in ALL_ARMS:
        for p in pipelines:
            if mine := [r for r in runs if r["arm"] == arm and r["pipeline"] == p]:
                entry = {t: {k: median([r["tests"][t][k] for r in mine]) for k in ("rps", "p50_ms", "p99_ms")}
                         for t in TESTS}
                entry["cpu_us"] = {proc: median([r["cpu_us"].get(proc) for r in mine])
                                   for proc in (*PROCS, "audit-writer", SINK_THREAD)}
                medians.setdefault(arm, {})[str(p)] = entry
    ratios: dict[str, dict] = {}
    for p in pipelines:
        for name, num, den, metric in RATIOS:
            for key, m in ([(f"{name} {t}", t) for t in TESTS] if metric == "rps" else [(name, metric)]):
                if values := paired(runs, num, den, p, m):
                    ratios.setdefault(str(p), {})[key] = {"median": median(values), "per_round": values}
    result |= {"medians": medians, "ratios": ratios}
    result["targets"] = targets(result)
    return result


def targets(result: dict) -> list[dict]:
    """Measured against the project's targets (issues 14 and 15 and earlier ones)."""
    ratio = lambda p, key: result["ratios"].get(str(p), {}).get(key, {}).get("median")
    memory, rows = result.get("memory") or {}, []

    def add(target: str, pipeline: int | None, measured: float | None, op: str, goal: float) -> None:
        met = None if measured is None else (measured <= goal if op == "≤" else measured >= goal)
        rows.append({"target": target, "pipeline": pipeline, "measured": measured, "goal": f"{op} {goal}",
                     "met": met})

    for p, goal in ((1, 1.1), (16, 1.3)):
        add("forwarding CPU: proxy-noaudit / haproxy (µs/request of the middle process)", p,
            ratio(p, "proxy-noaudit/haproxy CPU"), "≤", goal)
    for arm, goal in (("proxy-tls-plain", 0.85), ("proxy-tls-both", 0.6),
                      ("proxy-tls-plain-shared", 0.85), ("proxy-tls-both-shared", 0.6)):
        for t in TESTS:
            add(f"{arm} / redis-tls, {t} rps", 1, ratio(1, f"{arm}/redis-tls {t}"), "≥", goal)
    for p, goal in ((1, 0.97), (16, 0.9)):
        add("audit CPU: proxy − proxy-noaudit (µs/request of the middle process)", p,
            ratio(p, "audit CPU µs/request (proxy − proxy-noaudit)"), "≤", 0.5)
        for t in TESTS:
            add(f"audit overhead: proxy / proxy-noaudit, {t} rps", p, ratio(p, f"audit on/off {t}"),
                "≥", goal)
    for arm in ("proxy-shared", "proxy-shared-pc"):
        for p, goal in ((1, 1.0), (16, 0.9)):
            for t in TESTS:
                add(f"{arm} / direct, {t} rps", p, ratio(p, f"{arm}/direct {t}"), "≥", goal)
        add(f"redis-server CPU µs/request: {arm} / proxy", 1, ratio(1, f"redis CPU: {arm}/proxy"), "≤", 0.5)
    fanin = result.get("shared_fanin") or {}
    add("upstream connections for 10,000 clients (upstream.pool = shared)", None,
        fanin.get("upstream_connections") if fanin.get("clients", 0) >= 10_000 else None, "≤", 16)
    sink_thread = lambda p: (result["medians"].get("proxy-syslog", {}).get(str(p), {})
                             .get("cpu_us", {}).get(SINK_THREAD))
    for p in (1, 16):
        add("syslog-over-TLS sink CPU: proxy-syslog − proxy (µs/request of the middle process)", p,
            ratio(p, "syslog sink CPU µs/request (proxy-syslog − proxy)"), "≤", 0.5)
        add("syslog-over-TLS sink CPU: its own thread (µs/request, proxy-syslog)", p,
            sink_thread(p), "≤", 0.5)
        for t in TESTS:
            add(f"a collector that never reads (on_full = drop): proxy-syslog-stuck / proxy, {t} rps",
                p, ratio(p, f"proxy-syslog-stuck/proxy {t}"), "≥", 0.95)
    add("audit bytes per SET record (line and newline)", None,
        (result.get("audit") or {}).get("bytes_per_set_line"), "≤", 350)
    add("proxy memory per idle connection, KiB (after one PING)", None,
        memory.get("idle", {}).get("kib_per_conn_after_ping"), "≤", 64)
    add("peak memory for a big value, × its size", None, memory.get("big", {}).get("peak_multiple"),
        "≤", 2)
    return rows


# ---- rendering ---------------------------------------------------------------------------------
def fmt(value: float | None, spec: str = ",.0f") -> str:
    return DASH if value is None else format(value, spec)


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table padded to read as plain text too; columns of words are left-aligned."""
    columns = list(zip(headers, *rows))
    widths = [max(map(len, column)) for column in columns]
    left = [any(cell[:1].isalpha() for cell in column[1:]) for column in columns]
    line = lambda cells: "| " + " | ".join(c.ljust(w) if l else c.rjust(w)
                                           for c, w, l in zip(cells, widths, left)) + " |"
    rule = "|" + "|".join("-" * (w + 2) if l else "-" * (w + 1) + ":" for w, l in zip(widths, left)) + "|"
    return [line(headers), rule, *map(line, rows)]


def render_markdown(result: dict, docs: bool) -> str:
    """The report; for docs/benchmarks.md (docs=True) with the chart and links to the files."""
    s, m, med, runs = result["settings"], result["machine"], result["medians"], result["runs"]
    source = "[bench/result.json](bench/result.json)" if docs else "the result JSON"
    out = [f"## Latest run: {result['date']}, commit {result['git']}", "",
           f"Generated by `{result['command_line']}`; every figure, every run included, is in {source}. "
           f"{m['cpu']}, {m['nproc']} cores, Linux {m['kernel']}; {'; '.join(result['versions'].values())}. "
           f"`redis-benchmark -c {s['clients']} -n {s['requests']} -r 100000 -t set,get -P <pipeline> "
           "--csv`; "
           f"{s['rounds']} round(s), each running every arm once, in an order rotated each round; medians "
           "over the rounds; ratios are medians of the ratios of two arms within each round. CPU: "
           "utime + stime of each process over a run divided by its requests, in µs (for auditing arms "
           "read once the audit files stopped growing); middle = the proxy, HAProxy or twemproxy."]
    out += ["", "![Throughput and CPU per request per arm](bench/chart.svg)"] if docs else []
    out += ["", "Targets:", ""] + table(
        ["target", "pipeline", "measured", "target", "met?"],
        [[t["target"], fmt(t["pipeline"], "d"), fmt(t["measured"], ".2f"), t["goal"],
          "not measured" if t["met"] is None else ("met" if t["met"] else "not met")]
         for t in result["targets"]])
    for p in s["pipelines"]:
        rows = []
        for arm in [a for a in ALL_ARMS if str(p) in med.get(a, {})]:
            e, base = med[arm][str(p)], "redis-tls" if arm in TLS_ARMS else "direct"
            x = [median(paired(runs, arm, base, p, t)) for t in TESTS]
            cpu = e["cpu_us"]
            rows.append([arm, fmt(e["SET"]["rps"]), fmt(x[0], ".2f"), fmt(e["GET"]["rps"]), fmt(x[1], ".2f"),
                         f"{e['SET']['p50_ms']:.3f} / {e['GET']['p50_ms']:.3f}",
                         f"{e['SET']['p99_ms']:.3f} / {e['GET']['p99_ms']:.3f}",
                         *(fmt(cpu[proc], ".2f") for proc in PROCS),
                         fmt(sum(c for c in cpu.values() if c is not None), ".2f")])
        out += ["", f"Pipeline {p} (× base: to `direct`, or to `redis-tls` for the TLS arms; "
                    "latencies in ms):", ""]
        out += table(["arm", "SET rps", "× base", "GET rps", "× base", "p50 SET / GET", "p99 SET / GET",
                      "CPU µs/req: redis-server", "middle", "redis-benchmark", "total"], rows)
    keys = [k for name, *_, metric in RATIOS
            for k in ([f"{name} {t}" for t in TESTS] if metric == "rps" else [name])
            if any(k in r for r in result["ratios"].values())]
    cell = lambda r: fmt(r["median"], ".2f") + " (" + ", ".join(f"{x:.2f}" for x in r["per_round"]) + ")"
    out += ["", "Ratios within each round (median; per round in brackets):", ""] + table(
        ["ratio", *(f"pipeline {p}" for p in s["pipelines"])],
        [[k, *(cell(r) if (r := result["ratios"].get(str(p), {}).get(k)) else DASH for p in s["pipelines"])]
         for k in keys]) + [""]
    if a := result.get("audit"):
        lags = [r["audit_lag_s"] for r in runs if r["arm"] == "proxy"]
        out.append(f"- Audit trail of the `proxy` arm: {a['lines']:,} lines, {a['bytes']:,} bytes in "
                   f"{a['files']} file(s), {fmt(a['bytes_per_record'], '.1f')} bytes per record; "
                   f"{a['set_lines']:,} SET lines of {fmt(a['bytes_per_set_line'], '.1f')} bytes on "
                   f"average; {a['command_records']:,} command "
                   f"records for {a['sent']:,} SET/GET sent (plus redis-benchmark's CONFIG GETs), "
                   f"{a['lost_records']:,} dropped (queue full); the writer went on at most "
                   f"{max(lags):.1f} s after a run.")
        writer = [(p, e["cpu_us"].get("audit-writer")) for p, e in result["medians"].get("proxy", {}).items()]
        if shown := [f"{fmt(cpu, '.2f')} µs/request at pipeline {p}" for p, cpu in writer if cpu is not None]:
            out.append(f"- The `proxy` arm's audit writer thread alone (its share of `middle`): "
                       f"{', '.join(shown)}.")
    sink = [(p, e["cpu_us"].get(SINK_THREAD)) for p, e in result["medians"].get("proxy-syslog", {}).items()]
    if shown := [f"{fmt(cpu, '.2f')} µs/request at pipeline {p}" for p, cpu in sink if cpu is not None]:
        out.append(f"- The `proxy-syslog` arm's sink thread alone (TLS to the collector, one message "
                   f"per record; its share of `middle`): {', '.join(shown)}.")
    if acl := result.get("acl"):
        out.append(f"- `proxy-acl`, users file `{ACL_USERS}` in enforce mode: {acl['command_records']:,} "
                   f"command records, {acl['acl_denied']} denied.")
    if mem := result.get("memory"):
        i, b = mem["idle"], mem["big"]
        out.append(f"- Idle connections: {i['connections']} clients cost a fresh proxy "
                   f"{i['kib_per_conn_connected']:.1f} KiB each once connected "
                   f"(VmRSS {i['rss_before_kib']} → "
                   f"{i['rss_connected_kib']} KiB), {i['kib_per_conn_after_ping']:.1f} KiB after one PING, "
                   "upstream connection included.")
        out.append(f"- {b['mib']} MiB value, SET then GET through a fresh proxy: peak RSS (VmHWM) "
                   f"+{(b['hwm_after_set_kib'] - b['hwm_before_kib']) / 1024:.1f} MiB after the SET, "
                   f"+{(b['hwm_after_get_kib'] - b['hwm_before_kib']) / 1024:.1f} MiB in all, "
                   f"{b['peak_multiple']:.2f} × the value.")
    if fanin := result.get("shared_fanin"):
        out.append(f"- Shared pool fan-in: {fanin['clients']:,} clients, each after a PING, were served by "
                   f"{fanin['upstream_connections']} upstream connections "
                   f"({fanin['named_shared']} of them named redis-audit-proxy-shared).")
    out += [f"- `{name}` unavailable: {arm['unavailable']}" for name, arm in result["arms"].items()
            if arm["unavailable"]]
    out += ["", "<details><summary>Commands and configurations (ports picked per run)</summary>", "",
            "```sh"]
    if TLS_ARMS & set(result["arms"]):
        out.append("# tls/: a CA (ca.pem) and a certificate for localhost and 127.0.0.1 (server.pem, "
                   "server.key), made with openssl req and openssl x509")
    out.append(result["redis_command"])
    if "proxy-acl" in result["arms"]:
        out += ["cat >users.acl <<'EOF'", ACL_USERS, "EOF"]
    for name, arm in result["arms"].items():
        if arm["command"]:
            out += [f"cat >{arm['config_file']} <<'EOF'", *arm["config"].splitlines(), "EOF", arm["command"]]
    return "\n".join(out + [*result["commands"], "```", "", "</details>"]) + "\n"


def render_svg(result: dict) -> str:
    """Grouped horizontal bars: throughput and CPU per request per arm, one column per pipeline."""
    med, pipes = result["medians"], [str(p) for p in result["settings"]["pipelines"]]
    arms = [a for a in ALL_ARMS if a in med]
    metrics = [("Throughput (requests/s)", lambda v: f"{v / 1000:,.0f}k",
                [(t, color, lambda e, t=t: e[t]["rps"]) for t, color in zip(TESTS, ("#4e79a7", "#a0cbe8"))]),
               ("CPU µs per request", lambda v: f"{v:.2f}",
                [(proc if proc != "middle" else "middle (proxy, HAProxy, twemproxy)", color,
                  lambda e, proc=proc: e["cpu_us"][proc])
                 for proc, color in zip(PROCS, ("#59a14f", "#e15759", "#bab0ac"))])]
    label_w, bar_w, value_w, bar_h = 110, 270, 50, 9
    panel_w = label_w + bar_w + value_w
    text = lambda x, y, t, extra="": f'<text x="{x:.0f}" y="{y:.0f}" {extra}>{html.escape(t)}</text>'
    parts = [text(10, 22, f"redis-audit-proxy bench, {result['date']}, commit {result['git']}",
                  'font-size="14" font-weight="bold"')]
    y = 40
    for title, label, series in metrics:
        group_h = len(series) * bar_h + 8
        for i, (name, color, _) in enumerate(series):
            parts += [f'<rect x="{10 + i * 240}" y="{y}" width="10" height="10" fill="{color}"/>',
                      text(24 + i * 240, y + 9, name)]
        for col, p in enumerate(pipes):
            x0 = 10 + col * panel_w
            top = max([v for a in arms if p in med[a] for *_, fn in series if (v := fn(med[a][p]))] or [1])
            parts.append(text(x0, y + 32, f"{title}, pipeline {p}", 'font-weight="bold"'))
            for i, arm in enumerate(arms):
                gy = y + 42 + i * group_h
                parts.append(text(x0 + label_w - 6, gy + len(series) * bar_h / 2 + 4, arm,
                                  'text-anchor="end"'))
                for j, (_, color, fn) in enumerate(series):
                    if p in med[arm] and (value := fn(med[arm][p])) is not None:
                        w = bar_w * value / top
                        parts += [f'<rect x="{x0 + label_w}" y="{gy + j * bar_h}" width="{w:.1f}" '
                                  f'height="{bar_h - 1}" fill="{color}"/>',
                                  text(x0 + label_w + w + 3, gy + (j + 1) * bar_h - 1, label(value),
                                       'font-size="9"')]
        y += 50 + len(arms) * group_h
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{10 + panel_w * len(pipes)}" height="{y}" '
            'font-family="sans-serif" font-size="11">\n<rect width="100%" height="100%" fill="white"/>\n'
            + "\n".join(parts) + "\n</svg>\n")


def write_docs(result: dict) -> None:
    """Replaces the text between the markers in docs/benchmarks.md; writes the chart and the JSON."""
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        die(f"{DOC} has no {BEGIN} ... {END} markers to write between")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + render_markdown(result, True) + text[end:])
    CHART.parent.mkdir(parents=True, exist_ok=True)
    CHART.write_text(render_svg(result))
    DOC_JSON.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    log(f"wrote {DOC.relative_to(ROOT)} (between the markers), {CHART.relative_to(ROOT)} and "
        f"{DOC_JSON.relative_to(ROOT)}")


