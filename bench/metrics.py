#!/usr/bin/env python3
"""Benchmark of `keyd --metrics` at 10,000 secrets (one stack of passwords, each rotated on a
schedule, so every per-secret family has a sample), in one run:
- GET /metrics: time to the last byte and size, warm (facts cached) and first after a store
  change (`keyctl rotate` through the API: the store is decrypted and the facts made again);
- GetSecret latency (p50, p99) through the Docker plugin socket, one caller on a keep-alive
  connection, while /metrics is not scraped, scraped every second, and scraped back to back.
Usage: python3 bench/metrics.py [SECRETS] [SECONDS]   (default 10000 and 10 s per phase;
needs `cargo build --release -p keyd -p keyctl`)"""

import http.client
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
KEYCTL = os.path.join(ROOT, "target", "release", "keyctl")


def name(i, n):
    return f"P{i:0{max(5, len(str(n)))}d}"


def write_policy(path, n):
    with open(path, "w") as f:
        f.write(f'[stack]\nname = "scale"\ndescription = "{n} passwords"\n')
        for i in range(1, n + 1):
            f.write(f'\n[secrets.{name(i, n)}]\nkind = "password"\nlength = 32\n'
                    'rotate = "90d"\nstandalone = true\n')


def get_secret_body(secret):
    return json.dumps({
        "SecretName": secret.lower(), "SecretLabels": {"keyd.secret": f"scale/{secret}"},
        "ServiceID": "kx8", "ServiceName": "web", "TaskID": "t1", "TaskName": "web.1.t1",
        "TaskImage": "consumer:latest", "NodeID": "n1",
        "ServiceLabels": {"com.docker.stack.namespace": "scale"},
    }).encode()


def scrape(port):
    """One GET /metrics on a new connection: seconds to the last byte, and the body's size."""
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    body = response.read()
    took = time.perf_counter() - t
    conn.close()
    assert response.status == 200, body[:200]
    return took, len(body)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(proc):
    """Reads keyd's log until it serves /metrics (its start-up work is done by then), then keeps
    draining it so keyd never blocks on a full pipe."""
    for line in proc.stderr:
        if line.startswith(b"keyd: metrics on"):
            threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()
            return
    raise RuntimeError("keyd stopped before serving /metrics")


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def get_secrets(plugin_sock, body, seconds):
    s = socket.socket(socket.AF_UNIX)
    s.connect(plugin_sock)
    latencies = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        status, answer = request(s, "/SecretProvider.GetSecret", "POST", body)
        latencies.append(time.perf_counter() - t)
        assert status == 200 and json.loads(answer)["Err"] == "", answer[:200]
    s.close()
    return latencies


def phase(plugin_sock, port, body, seconds, scraping):
    """GetSecret latencies for `seconds` while a thread scrapes: never, every second, or back
    to back; and the scrapes' times."""
    stop = threading.Event()
    scrapes = []

    def scraper():
        while not stop.is_set():
            scrapes.append(scrape(port)[0])
            if scraping == "every 1 s":
                stop.wait(1.0)

    thread = threading.Thread(target=scraper) if scraping != "never" else None
    if thread:
        thread.start()
    latencies = get_secrets(plugin_sock, body, seconds)
    stop.set()
    if thread:
        thread.join()
    return latencies, scrapes


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    work = tempfile.mkdtemp(prefix="keyd-bench-metrics-")
    proc = None
    try:
        home = os.path.join(work, "home")
        policy = os.path.join(work, "scale.toml")
        write_policy(policy, n)
        t = time.perf_counter()
        subprocess.run([KEYCTL, "--home", home, "quickstart", "--policy", policy, "--out",
                        os.path.join(work, "out")], check=True, stdout=subprocess.DEVNULL)
        print(f"{n} secrets; quickstart {time.perf_counter() - t:.1f} s")
        port = free_port()
        plugin_sock = os.path.join(work, "plugin.sock")
        proc = subprocess.Popen([KEYD, "--home", home, "--metrics", f"127.0.0.1:{port}",
                                 "--docker-plugin", plugin_sock, "--plugin-stack", "scale"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_ready(proc)
        first, size = scrape(port)
        warm = [scrape(port)[0] for _ in range(20)]
        print(f"/metrics: {size / 1e6:.2f} MB; first {first * 1e3:.0f} ms; warm median "
              f"{statistics.median(warm) * 1e3:.1f} ms, max {max(warm) * 1e3:.1f} ms (20 scrapes)")
        changed = []
        for i in range(1, 6):
            subprocess.run([KEYCTL, "--home", home, "--socket", os.path.join(home, "keyd.sock"),
                            "rotate", name(i, n)], check=True, stdout=subprocess.DEVNULL)
            changed.append(scrape(port)[0])
        print(f"/metrics first after a store change: median {statistics.median(changed) * 1e3:.0f} ms, "
              f"max {max(changed) * 1e3:.0f} ms (5 rotations)")
        body = get_secret_body(name(n, n))
        get_secrets(plugin_sock, body, 1.0)  # the plugin's view of the changed store, decrypted once
        print(f"GetSecret through the plugin socket, {seconds:.0f} s per phase, one keep-alive caller")
        print(f"{'scraping':16} {'requests':>9} {'p50':>9} {'p99':>9} {'max':>9} {'scrapes':>8} {'scrape p50':>11}")
        for scraping in ("never", "every 1 s", "back to back"):
            latencies, scrapes = phase(plugin_sock, port, body, seconds, scraping)
            scrape_p50 = f"{statistics.median(scrapes) * 1e3:9.1f}ms" if scrapes else f"{'-':>11}"
            print(f"{scraping:16} {len(latencies):9d} {pct(latencies, 0.5) * 1e3:7.3f}ms "
                  f"{pct(latencies, 0.99) * 1e3:7.3f}ms {max(latencies) * 1e3:7.3f}ms {len(scrapes):8d} {scrape_p50}")
    finally:
        if proc:
            proc.terminate()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
