#!/usr/bin/env python3
"""Benchmark of keyd's Docker secret-provider plugin socket against a named anchor, alternating
in one run: bench/anchor_plugin.py, a minimal threaded Python plugin answering the same protocol
from a dict.
- GetSecret latency p50/p99 with 1 and with 32 concurrent callers, each on its own keep-alive
  connection (the engine's plugin client keeps connections too);
- exec until the plugin socket answers Plugin.Activate, and idle RSS (VmRSS) after serving.
Usage: python3 bench/plugin.py [ROUNDS]   (default 5; needs `cargo build --release -p keyd`)"""

import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon import request  # noqa: E402  (the same HTTP/1.1 exchange over a Unix socket)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYD = os.path.join(ROOT, "target", "release", "keyd")
KEYCTL = next(
    p for p in (os.path.join(ROOT, "target", t, "keyctl") for t in ("release", "debug")) if os.path.exists(p)
)
ANCHOR = os.path.join(ROOT, "bench", "anchor_plugin.py")
POLICY = """[stack]
name = "app"

[secrets.DB_PASSWORD]
kind = "password"

[secrets.SESSION_KEY]
kind = "token"
bytes = 32
"""
GET_SECRET = json.dumps({
    "SecretName": "db_password",
    "SecretLabels": {"keyd.secret": "app/DB_PASSWORD"},
    # keyd serves a service only its own stack's secrets (the stack's namespace label).
    "ServiceLabels": {"com.docker.stack.namespace": "app"},
    "ServiceID": "kx8", "ServiceName": "web", "TaskID": "t1", "TaskName": "web.1.t1",
    "TaskImage": "consumer:latest", "NodeID": "n1",
}).encode()


def post(sock, path, body=b""):
    return request(sock, path, "POST", body)


def wait_ready(path, deadline=10.0):
    start = time.perf_counter()
    while time.perf_counter() - start < deadline:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            post(s, "/Plugin.Activate")
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
        sock = os.path.join(work, "keyd-plugin.sock")
        argv = [KEYD, "--home", os.path.join(work, "home"), "--socket", os.path.join(work, "api.sock"),
                "--docker-plugin", sock, "--plugin-stack", "app"]
    else:
        sock = os.path.join(work, "anchor.sock")
        argv = [sys.executable, ANCHOR, sock, os.path.join(work, "values.json")]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, sock, wait_ready(sock) - t0


def load(sock_path, expected, clients, per_client):
    latencies, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client():
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock_path)
        post(s, "/Plugin.Activate")
        mine = []
        barrier.wait()
        for _ in range(per_client):
            t = time.perf_counter()
            status, body = post(s, "/SecretProvider.GetSecret", GET_SECRET)
            mine.append(time.perf_counter() - t)
            if status != 200 or json.loads(body)["Value"] != expected:
                errors.append(body[:80])
        s.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    return latencies


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    work = tempfile.mkdtemp(prefix="keyd-bench-plugin-")
    try:
        with open(os.path.join(work, "app.toml"), "w") as f:
            f.write(POLICY)
        subprocess.run([KEYCTL, "--home", os.path.join(work, "home"), "quickstart", "--policy",
                        os.path.join(work, "app.toml"), "--out", os.path.join(work, "out")],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(work, "out", "DB_PASSWORD"), "rb") as f:
            expected = base64.b64encode(f.read()).decode()
        with open(os.path.join(work, "values.json"), "w") as f:
            json.dump({"app/DB_PASSWORD": expected}, f)
        results = {k: {"start": [], "rss": [], 1: [], 32: []} for k in ("keyd", "anchor")}
        for r in range(rounds):
            for kind in (("keyd", "anchor") if r % 2 == 0 else ("anchor", "keyd")):
                proc, sock, ready = start(kind, work)
                try:
                    results[kind]["start"].append(ready)
                    results[kind][1].extend(load(sock, expected, 1, 400))
                    results[kind][32].extend(load(sock, expected, 32, 25))
                    time.sleep(0.3)
                    results[kind]["rss"].append(rss_kib(proc.pid))
                finally:
                    proc.terminate()
                    proc.wait()
        print(f"{rounds} rounds, alternating; latency per GetSecret on a keep-alive connection")
        print(f"{'':8} {'p50 1':>9} {'p99 1':>9} {'p50 32':>9} {'p99 32':>9} {'start':>9} {'idle RSS':>9}")
        row = {}
        for kind in ("keyd", "anchor"):
            res = results[kind]
            row[kind] = (pct(res[1], 0.5), pct(res[1], 0.99), pct(res[32], 0.5), pct(res[32], 0.99),
                         statistics.median(res["start"]), statistics.median(res["rss"]))
            v = row[kind]
            print(f"{kind:8} {v[0]*1e3:8.3f}ms {v[1]*1e3:8.3f}ms {v[2]*1e3:8.3f}ms {v[3]*1e3:8.3f}ms "
                  f"{v[4]*1e3:7.1f}ms {v[5]/1024:6.1f}MiB")
        k, a = row["keyd"], row["anchor"]
        print("anchor/keyd " + " ".join(f"{a[i]/k[i]:8.2f}x" for i in range(6)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
