#!/usr/bin/env bash
# Regenerates the command table embedded in the binary: the raw RESP2 reply of `COMMAND` from a
# real redis-server, saved as src/command/embedded.resp, with the server version
# (embedded.version) and its `ACL CAT` list (embedded.categories) beside it.
# Usage: scripts/gen-command-table.sh [path/to/redis-server]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-redis.sh
server=${1:-redis-server}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$server" --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no --logfile '' \
  >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
python3 - "$port" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
for _ in range(100):
    try:
        s = socket.create_connection(("127.0.0.1", port)); break
    except OSError:
        time.sleep(0.05)
def call(cmd):
    s.sendall(cmd)
    s.sendall(b"*1\r\n$4\r\nQUIT\r\n")
    data = b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk: break
        data += chunk
    assert data.endswith(b"+OK\r\n"), data[-40:]
    return data[:-5]
reply = call(b"*1\r\n$7\r\nCOMMAND\r\n")
s = socket.create_connection(("127.0.0.1", port))
categories = call(b"*2\r\n$3\r\nACL\r\n$3\r\nCAT\r\n")
s = socket.create_connection(("127.0.0.1", port))
info = call(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
version = [l for l in info.split(b"\r\n") if l.startswith(b"redis_version:")][0].split(b":")[1].decode()
open("src/command/embedded.resp", "wb").write(reply)
open("src/command/embedded.version", "w").write(version + "\n")
names = [l.decode() for l in categories.split(b"\r\n")[1:] if l and not l.startswith((b"$", b"*"))]
open("src/command/embedded.categories", "w").write("\n".join(names) + "\n")
print(f"src/command/embedded.resp: COMMAND reply of redis {version}, {len(reply)} bytes")
PY
