#!/usr/bin/env python3
"""Writes a large synthetic audit directory for the query benchmark (issue: a query over 10
million records in rotated files returns its first page in under 2 s).

    python3 scripts/gen-audit-data.py DIR [RECORDS] [FILES]

Lines have the proxy's exact layout (schema redis-audit/1 command records, spread evenly over
one day from 2026-11-20T00:00:00Z; users, client addresses, databases and commands cycle
through small sets). The chain hashes are placeholders: this data is for `audit query`, not
for `audit verify`. Rotated files are named as the writer names them; the last file is
`audit.log`.
"""
import os
import sys

def main():
    out = sys.argv[1]
    records = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000_000
    files = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    os.makedirs(out, exist_ok=True)
    users = ["alice", "bob", "carol", "default", "svc-billing"]
    ips = ["10.0.0.%d" % i for i in range(1, 21)]
    commands = [("get", "read", '["@read","@string","@fast"]'),
                ("set", "write", '["@write","@string","@slow"]'),
                ("hset", "write", '["@write","@hash","@fast"]'),
                ("zrange", "read", '["@read","@sortedset","@slow"]')]
    start = 1795132800  # 2026-11-20T00:00:00Z
    per_file = records // files
    step_us = 86_400_000_000 // records
    prev = "0" * 64
    n = 0
    for f in range(files):
        name = "audit.log" if f == files - 1 else "audit-20261120T%06d.000Z-%04d.log" % (f, f)
        with open(os.path.join(out, name), "w", buffering=1 << 22) as fh:
            lines = []
            for _ in range(per_file):
                t_us = start * 1_000_000 + n * step_us
                secs, micros = divmod(t_us, 1_000_000)
                day, rem = divmod(secs - start, 86400)
                hh, rem = divmod(rem, 3600)
                mm, ss = divmod(rem, 60)
                time = "2026-11-%02dT%02d:%02d:%02d.%06dZ" % (20 + day, hh, mm, ss, micros)
                user = users[n % len(users)]
                ip = ips[(n // 7) % len(ips)]
                cmd, cls, cats = commands[n % len(commands)]
                db = n % 4
                lines.append(
                    '{"schema":"redis-audit/1","time":"%s","seq":%d,"instance_id":"6a1f0c55-0000-4000-8000-000000000001","node":"bench","kind":"command","action":"command","outcome":"success","session_id":"6a1f0c55-%d","client":{"ip":"%s","port":%d,"resp":2},"user":"%s","db":%d,"upstream":"127.0.0.1:6379","command":{"name":"%s","known":true,"class":"%s","categories":%s},"keys":["key:%d"],"key_count":1,"key_bytes":%d,"keys_truncated":false,"result":{"status":"ok","source":"upstream"},"duration_us":%d,"request_bytes":45,"response_bytes":5,"chain":{"alg":"sha256","prev":"%s"}}\n'
                    % (time, n + 1, n % 5000 + 1, ip, 40000 + n % 20000, user, db, cmd, cls, cats, n % 100000, len("key:%d" % (n % 100000)), 50 + n % 400, prev))
                n += 1
                if len(lines) >= 50_000:
                    fh.write("".join(lines))
                    lines.clear()
            fh.write("".join(lines))
    print("wrote %d records in %d files to %s" % (n, files, out))

main()
