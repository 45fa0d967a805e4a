#!/usr/bin/env python3
"""Benchmark of the keyd daemon against named anchors, alternating in one run:
- start-up (exec until the socket answers) and idle RSS: keyd vs bench/anchor_server.py, a
  minimal threaded Python JSON server on a Unix socket;
- `keyctl rotate` until the delivered file is replaced: through the daemon vs keyctl alone
  (the store-lock path, no daemon);
- request latency p50/p99 under a bounded concurrent load (8 clients x 250 keep-alive
  requests on the socket): keyd GET /v1/health and GET /v1/status vs the anchor's GET /health.
Usage: python3 bench/daemon.py [RUNS] [--bin DIR]   (RUNS default 15; DIR default target/release,
run `cargo build --release` first)"""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYD = os.path.join(ROOT, "target", "release", "keyd")
KEYCTL = os.path.join(ROOT, "target", "release", "keyctl")
ANCHOR = os.path.join(ROOT, "bench", "anchor_server.py")
POLICY = os.path.join(ROOT, "policies", "flowkit.toml")


def request(sock, path, method="GET", body=b""):
    sock.sendall(f"{method} {path} HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    head, rest = head.split(b"\r\n\r\n", 1)
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split(b" ")[1]), rest


def wait_ready(path, deadline=10.0):
    start = time.perf_counter()
    while time.perf_counter() - start < deadline:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            request(s, "/v1/health" if "keyd" in path else "/health")
            s.close()
            return time.perf_counter()
        except OSError:
            time.sleep(0.0005)
    raise RuntimeError(f"{path} never answered")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))


def start(kind, work):
    if kind == "keyd":
        sock = os.path.join(work, "keyd.sock")
        argv = [KEYD, "--home", os.path.join(work, "home"), "--socket", sock]
    else:
        sock = os.path.join(work, "anchor.sock")
        argv = [sys.executable, ANCHOR, sock]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ready = wait_ready(sock) - t0
    return proc, sock, ready


def load(sock_path, path, clients=8, per_client=250):
    latencies = []
    lock = threading.Lock()

    def client():
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock_path)
        mine = []
        for _ in range(per_client):
            t = time.perf_counter()
            status, _ = request(s, path)
            mine.append(time.perf_counter() - t)
            assert status == 200
        s.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    return latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]


def wait_replaced(path, before, deadline=30.0):
    start = time.perf_counter()
    while time.perf_counter() - start < deadline:
        try:
            if os.stat(path).st_ino != before:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.0002)
    raise RuntimeError("file never replaced")


def main():
    global KEYD, KEYCTL
    args = sys.argv[1:]
    if "--bin" in args:
        i = args.index("--bin")
        KEYD, KEYCTL = (os.path.join(args[i + 1], b) for b in ("keyd", "keyctl"))
        del args[i:i + 2]
    runs = int(args[0]) if args else 15
    work = tempfile.mkdtemp(prefix="keyd-bench-daemon-")
    try:
        home = os.path.join(work, "home")
        out = os.path.join(work, "out")
        subprocess.run([KEYCTL, "--home", home, "quickstart", "--policy", POLICY, "--out", out], check=True, stdout=subprocess.DEVNULL)
        ready = {"keyd": [], "anchor": []}
        rss = {"keyd": [], "anchor": []}
        for i in range(runs):
            for kind in (["keyd", "anchor"] if i % 2 == 0 else ["anchor", "keyd"]):
                proc, _, t = start(kind, work)
                ready[kind].append(t)
                time.sleep(0.5)  # idle
                rss[kind].append(rss_kib(proc.pid))
                proc.terminate()
                proc.wait()

        # Rotate until the delivered file is replaced: via the daemon, and keyctl alone.
        target = os.path.join(out, "FLOWAUTH_FERNET_KEY")
        via_daemon, alone = [], []
        for i in range(runs):
            for mode in (["daemon", "alone"] if i % 2 == 0 else ["alone", "daemon"]):
                proc = None
                if mode == "daemon":
                    proc, sock, _ = start("keyd", work)
                before = os.stat(target).st_ino
                argv = [KEYCTL, "--home", home, "rotate", "FLOWAUTH_FERNET_KEY"]
                t = time.perf_counter()
                subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
                wait_replaced(target, before)
                (via_daemon if mode == "daemon" else alone).append(time.perf_counter() - t)
                if proc:
                    proc.terminate()
                    proc.wait()

        # Latency under load.
        kproc, ksock, _ = start("keyd", work)
        aproc, asock, _ = start("anchor", work)
        lat = {
            "keyd GET /v1/health": load(ksock, "/v1/health"),
            "keyd GET /v1/status": load(ksock, "/v1/status"),
            "anchor GET /health": load(asock, "/health"),
        }
        for p in (kproc, aproc):
            p.terminate()
            p.wait()

        med = statistics.median
        print(f"{runs} alternating runs, {os.cpu_count()} cores")
        print("Start-up (exec until the socket answers), median:")
        print(f"  keyd            {med(ready['keyd']) * 1000:7.1f} ms")
        print(f"  anchor (python) {med(ready['anchor']) * 1000:7.1f} ms   ratio anchor/keyd {med(ready['anchor']) / med(ready['keyd']):.1f}x")
        print("Idle RSS, median:")
        print(f"  keyd            {med(rss['keyd']) / 1024:7.2f} MiB")
        print(f"  anchor (python) {med(rss['anchor']) / 1024:7.2f} MiB   ratio anchor/keyd {med(rss['anchor']) / med(rss['keyd']):.1f}x")
        print("keyctl rotate FLOWAUTH_FERNET_KEY until the delivered file is replaced, median:")
        print(f"  through keyd    {med(via_daemon) * 1000:7.1f} ms")
        print(f"  keyctl alone    {med(alone) * 1000:7.1f} ms   ratio {med(alone) / med(via_daemon):.2f}x")
        print("Latency under load (8 clients x 250 keep-alive requests), p50 / p99:")
        for name, (p50, p99) in lat.items():
            print(f"  {name:22} {p50 * 1000:7.3f} ms / {p99 * 1000:7.3f} ms")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
