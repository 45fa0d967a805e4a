#!/usr/bin/env python3
"""Benchmark: `keyctl import` (issue 11). Two sets, each imported into a fresh home per run:
  flowkit  the files FlowKit's quickstart script makes (bench/flowkit-openssl.sh, run once),
           with policies/flowkit.toml: 15 values checked (RSA-4096 key and its public half, a
           TLS pair, Fernet keys, passwords, a token) and 8 literals compared;
  env      N password values (default 10,000) in one .env file, with a policy of N passwords.
Prints the median and spread of wall time and the median peak RSS (wait4's ru_maxrss, the
command started as in bench/scale.py so Python's own RSS does not count) over --runs runs.
Usage: python3 bench/import.py [--keyctl target/release/keyctl] [--runs 7] [--n 10000]
                               [--tmp DIR] [--json FILE]
Standard library only; run `cargo build --release -p keyctl` first."""

import argparse
import ctypes
import json
import os
import secrets
import statistics
import string
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale import ROOT, log, run  # noqa: E402  (same launcher: per-command peak RSS)

ALNUM = string.ascii_letters + string.digits


def write_env_set(dir, n):
    policy = os.path.join(dir, "env.toml")
    env = os.path.join(dir, "values.env")
    with open(policy, "w") as f:
        f.write('[stack]\nname = "bulk"\n')
        for i in range(n):
            f.write(f'\n[secrets.P{i:05d}]\nkind = "password"\nlength = 32\n')
    with open(env, "w") as f:
        f.write(f"# {n} passwords\n")
        for i in range(n):
            value = "".join(secrets.choice(ALNUM) for _ in range(32))
            f.write(f"P{i:05d}={value}\n")
    return policy, env


def measure(keyctl, policy, source, runs, tmp, timeout=300):
    times, rss = [], []
    for r in range(runs):
        home = tempfile.mkdtemp(prefix="keyd-bench-import-", dir=tmp)
        seconds, kib = run([keyctl, "--home", home, "import", "--policy", policy, source],
                           timeout)
        times.append(seconds)
        rss.append(kib)
        subprocess.run(["rm", "-rf", home], check=True)
        log(f"  run {r + 1}/{runs}: {seconds:.3f} s, {kib / 1024:.1f} MiB")
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "median_rss_mib": statistics.median(rss) / 1024,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keyctl", default=os.path.join(ROOT, "target/release/keyctl"))
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not os.path.exists(args.keyctl):
        sys.exit(f"{args.keyctl} is missing: cargo build --release -p keyctl")
    # scale.run reaps each command itself, as a child subreaper (see LAUNCH in scale.py).
    if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        sys.exit("needs Linux: prctl(PR_SET_CHILD_SUBREAPER) failed")
    work = tempfile.mkdtemp(prefix="keyd-bench-import-set-", dir=args.tmp)
    try:
        src = os.path.join(work, "flowkit-secrets")
        log("making FlowKit's secrets with bench/flowkit-openssl.sh")
        subprocess.run(["bash", os.path.join(ROOT, "bench/flowkit-openssl.sh"), src],
                       check=True)
        policy = os.path.join(ROOT, "policies/flowkit.toml")
        log(f"flowkit set ({len(os.listdir(src))} files), {args.runs} runs")
        results = {"flowkit": measure(args.keyctl, policy, src, args.runs, args.tmp)}
        log(f"env set: {args.n} values")
        env_policy, env = write_env_set(work, args.n)
        results["env"] = measure(args.keyctl, env_policy, env, args.runs, args.tmp)
    finally:
        subprocess.run(["rm", "-rf", work], check=True)
    print(f"| set | values | median | min - max | peak RSS (median) |")
    print(f"|---|---:|---:|---:|---:|")
    for key, label, count in (("flowkit", "FlowKit quickstart output (dir)", "23 files"),
                              ("env", ".env of passwords", f"{args.n:,}")):
        r = results[key]
        print(f"| {label} | {count} | {r['median_s']:.3f} s | {r['min_s']:.3f} - "
              f"{r['max_s']:.3f} s | {r['median_rss_mib']:.1f} MiB |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
