#!/usr/bin/env python3
"""Benchmark: the file store against the swarm store (--store swarm:NAME), in the same run.

For the FlowKit policy and for N password secrets (default 10,000), on each backend:
  load     `keyctl list` (decrypt and parse the whole store; stdout discarded)
  rotate   `keyctl rotate NAME` of one secret, no daemon
and on the swarm store:
  raft     bytes committed to the swarm's Raft log by one rotation (generations written times
           the store's encrypted size, read from the heads' labels)
  propagation  two keyd processes on one swarm store, each serving the plugin protocol on its
           own socket: after a rotation through the first one's API, the time until the second
           serves the new value.
Runs alternate file/swarm (and which goes first) so both see the same machine noise. Prints
medians, and swarm/file ratios. Needs a Docker engine; makes a single-node swarm if none is
active (and leaves it again), and removes every config it made.
Usage: python3 bench/store.py [--bin DIR] [--secrets 10000] [--runs 5]
DIR defaults to target/release (run `cargo build --release -p keyctl -p keyd` first)."""

import argparse
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def env_for(store):
    env = {k: v for k, v in os.environ.items() if k not in ("KEYD_HOME", "KEYD_SOCKET")}
    env["KEYD_STORE"] = store
    return env


def timed(argv, env):
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def docker(*args):
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def heads(name):
    """(generation, size) of every head of swarm store `name`."""
    ids = docker("config", "ls", "-q", "--filter", f"label=keyd.store.head={name}").split()
    if not ids:
        return []
    out = json.loads(docker("config", "inspect", *ids))
    return [
        (int(c["Spec"]["Labels"]["keyd.store.generation"]), int(c["Spec"]["Labels"]["keyd.store.size"]))
        for c in out
    ]


def remove_store(name):
    ids = docker("config", "ls", "-q", "--filter", f"label=keyd.store={name}").split()
    if ids:
        subprocess.run(["docker", "config", "rm", *ids], capture_output=True)


def big_policy(path, n):
    with open(path, "w") as f:
        f.write('[stack]\nname = "scale"\n\n')
        for i in range(n):
            f.write(f"[secrets.P{i:05}]\nkind = \"password\"\n")


def get_secret(sock, name):
    body = json.dumps({
        "SecretName": name, "SecretLabels": {}, "ServiceID": "s", "ServiceName": "web",
        "ServiceLabels": {"com.docker.stack.namespace": "flowkit"}, "TaskID": "t",
        "TaskName": "web.1.t", "TaskImage": "x", "NodeID": "n", "ServiceEndpointSpec": {"Mode": 1},
    })
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(
        f"POST /SecretProvider.GetSecret HTTP/1.1\r\nHost: p\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
    )
    raw = b""
    while chunk := s.recv(65536):
        raw += chunk
    s.close()
    answer = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    return base64.b64decode(answer.get("Value") or "")


def wait_for_socket(path, proc, limit=30):
    start = time.time()
    while not os.path.exists(path):
        if proc.poll() is not None or time.time() - start > limit:
            raise SystemExit(f"keyd did not serve {path}")
        time.sleep(0.02)


def propagation(bins, tmp, store, policy, runs):
    """Seconds from a rotation through keyd A's API to keyd B serving the new value."""
    homes = [os.path.join(tmp, f"prop-{x}") for x in "ab"]
    env = env_for(store)
    subprocess.run([bins["keyctl"], "--home", homes[0], "quickstart", "--policy", policy,
                    "--out", os.path.join(tmp, "prop-out")], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    os.makedirs(homes[1], mode=0o700)
    shutil.copy(os.path.join(homes[0], "identity.txt"), os.path.join(homes[1], "identity.txt"))
    os.chmod(os.path.join(homes[1], "identity.txt"), 0o600)
    procs, plugins = [], []
    try:
        for h in homes:
            plugin = os.path.join(h, "plugin.sock")
            p = subprocess.Popen([bins["keyd"], "--home", h, "--socket", os.path.join(h, "keyd.sock"),
                                  "--docker-plugin", plugin, "--plugin-stack", "flowkit"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(p)
            wait_for_socket(plugin, p)
            plugins.append(plugin)
        out = []
        for _ in range(runs):
            before = get_secret(plugins[1], "SECRET_KEY")
            subprocess.run([bins["keyctl"], "--home", homes[0], "--socket",
                            os.path.join(homes[0], "keyd.sock"), "rotate", "SECRET_KEY"],
                           env=env, check=True, stdout=subprocess.DEVNULL)
            start = time.perf_counter()
            while get_secret(plugins[1], "SECRET_KEY") == before:
                time.sleep(0.005)
            out.append(time.perf_counter() - start)
        return out
    finally:
        for p in procs:
            p.terminate()
            p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--secrets", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    bins = {b: os.path.join(args.bin, b) for b in ("keyctl", "keyd")}
    made_swarm = docker("info", "--format", "{{.Swarm.LocalNodeState}}").strip() != "active"
    if made_swarm:
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    tmp = tempfile.mkdtemp(prefix="keyd-bench-store-")
    tag = f"bench{os.getpid() % 100000}"
    results = {}
    try:
        big = os.path.join(tmp, "big.toml")
        big_policy(big, args.secrets)
        cases = [("flowkit", os.path.join(ROOT, "policies", "flowkit.toml"), "SECRET_KEY"),
                 (f"{args.secrets}", big, "P00001")]
        for label, policy, secret in cases:
            homes = {}
            for backend in ("file", "swarm"):
                name = f"{tag}{label[:6]}"
                store = "file" if backend == "file" else f"swarm:{name}"
                home = os.path.join(tmp, f"{label}-{backend}")
                subprocess.run([bins["keyctl"], "--home", home, "quickstart", "--policy", policy,
                                "--out", home + "-out"], env=env_for(store), check=True,
                               stdout=subprocess.DEVNULL)
                homes[backend] = (home, store, name)
            for run in range(args.runs):
                order = ("file", "swarm") if run % 2 == 0 else ("swarm", "file")
                for backend in order:
                    home, store, name = homes[backend]
                    env = env_for(store)
                    before = max((g for g, _ in heads(name)), default=0) if backend == "swarm" else 0
                    r = results.setdefault((label, backend), {"load": [], "rotate": [], "raft": []})
                    r["load"].append(timed([bins["keyctl"], "--home", home, "list"], env))
                    r["rotate"].append(timed([bins["keyctl"], "--home", home, "rotate", secret, "--force"], env))
                    if backend == "swarm":
                        written = [s for g, s in heads(name) if g > before]
                        r["raft"].append(sum(written))
                log(f"{label}: run {run + 1}/{args.runs} done")
        prop = propagation(bins, tmp, f"swarm:{tag}prop", cases[0][1], args.runs)
    finally:
        for name in {f"{tag}{c[:6]}" for c in ("flowkit", str(args.secrets))} | {f"{tag}prop"}:
            remove_store(name)
        shutil.rmtree(tmp, ignore_errors=True)
        if made_swarm:
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True)
    med = statistics.median
    print(f"| policy | load file | load swarm | ratio | rotate file | rotate swarm | ratio | Raft bytes / rotation |")
    print("|---|---|---|---|---|---|---|---|")
    for label in ("flowkit", str(args.secrets)):
        f, s = results[(label, "file")], results[(label, "swarm")]
        print(f"| {label} | {med(f['load'])*1000:.0f} ms | {med(s['load'])*1000:.0f} ms | "
              f"{med(s['load'])/med(f['load']):.2f} | {med(f['rotate'])*1000:.0f} ms | "
              f"{med(s['rotate'])*1000:.0f} ms | {med(s['rotate'])/med(f['rotate']):.2f} | "
              f"{med(s['raft']):,.0f} |")
    print(f"\npropagation to a second plugin (swarm store, FlowKit): median {med(prop)*1000:.0f} ms, "
          f"max {max(prop)*1000:.0f} ms over {len(prop)} rotations")


if __name__ == "__main__":
    main()
