#!/usr/bin/env python3
"""Memory of `palisade serve` under large uploads (issue 12), for
scripts/bench.sh: starts the server given on a temporary data directory,
sends rounds of 8 concurrent uploads at and over the size limits, and
prints a markdown table of the server's RSS (from /proc/PID/status): the
peak during each round and 3 s after it.

Usage: upload-memory.py PALISADE_BINARY
"""

import http.client
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

MIB = 1 << 20


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as d:
        server = subprocess.Popen(
            [sys.argv[1], "serve", "--listen", "127.0.0.1:0", "--data-dir", f"{d}/data"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            line = server.stdout.readline().decode()
            host, port = line.strip().split("http://")[1].split(":")
            return measure(server.pid, host, int(port))
        finally:
            server.kill()
            server.wait()


def rss_mib(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) // 1024


def upload(host: str, port: int, path: str, size: int, chunked: bool) -> str:
    conn = http.client.HTTPConnection(host, port, timeout=120)
    block = os.urandom(MIB)
    conn.putrequest("POST", path)
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Transfer-Encoding" if chunked else "Content-Length", "chunked" if chunked else str(size))
    conn.endheaders()
    try:
        for _ in range(size // MIB):
            conn.send(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
        if chunked:
            conn.send(b"0\r\n\r\n")
    except OSError:
        pass  # refused before the end: the answer says why
    try:
        return str(conn.getresponse().status)
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__


def measure(pid: int, host: str, port: int) -> int:
    time.sleep(0.5)
    print(f"Baseline RSS {rss_mib(pid)} MiB.\n")
    print("| 8 concurrent uploads | answers | peak RSS | 3 s after |")
    print("|---|---|---|---|")
    rounds = [
        ("modules at the limit (16 MiB, not wasm)", "/v1/strategies", 16 * MIB, False),
        ("the same, again", "/v1/strategies", 16 * MIB, False),
        ("the same, a third time", "/v1/strategies", 16 * MIB, False),
        ("datasets at the limit (64 MiB chunked, not CSV)", "/v1/datasets?name=X", 64 * MIB, True),
        ("100 MiB chunked modules (over the limit)", "/v1/strategies", 100 * MIB, True),
    ]
    for label, path, size, chunked in rounds:
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(upload(host, port, path, size, chunked)))
                   for _ in range(8)]
        for t in threads:
            t.start()
        peak = 0
        while any(t.is_alive() for t in threads):
            peak = max(peak, rss_mib(pid))
            time.sleep(0.05)
        time.sleep(3)
        print(f"| {label} | {', '.join(sorted(set(answers)))} | {peak} MiB | {rss_mib(pid)} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
