#!/usr/bin/env python3
"""Benchmark: `keyctl quickstart` on policies/flowkit.toml against the openssl-based anchor
(bench/flowkit-openssl.sh), alternating runs in the same process so both see the same machine
noise; then RSA-4096 generation, `keyctl gen rsa` against `openssl genrsa 4096`, alternating.
Prints medians and ratios. Usage: python3 bench/quickstart.py [RUNS] [--old KEYCTL]
(RUNS default 15). --old adds a third command to every round, the FlowKit quickstart by another
keyctl binary (say an older revision's, as bench/scale.py builds it), to show in the same run
whether this build got slower. Builds nothing: run `cargo build --release -p keyctl` first."""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYCTL = os.path.join(ROOT, "target", "release", "keyctl")
ANCHOR = os.path.join(ROOT, "bench", "flowkit-openssl.sh")
POLICY = os.path.join(ROOT, "policies", "flowkit.toml")


def timed(argv, **kw):
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="?", type=int, default=15)
    ap.add_argument("--old", metavar="KEYCTL", help="a second keyctl binary to time in every round")
    a = ap.parse_args()
    runs = a.runs
    if not os.path.exists(KEYCTL):
        sys.exit("build first: cargo build --release -p keyctl")
    if a.old and not os.access(a.old, os.X_OK):
        sys.exit(f"--old {a.old}: not an executable")
    keyd, anchor, old, keyd_rsa, openssl_rsa = [], [], [], [], []
    for i in range(runs):
        work = tempfile.mkdtemp(prefix="keyd-bench-")
        try:
            def quickstart(binary, tag):
                return [binary, "--home", f"{work}/{tag}-home", "quickstart", "--policy", POLICY,
                        "--out", f"{work}/{tag}-out"]
            round_ = [
                (keyd, quickstart(KEYCTL, "new")),
                (anchor, ["bash", ANCHOR, f"{work}/anchor"]),
            ]
            if a.old:
                round_.append((old, quickstart(a.old, "old")))
            # Rotate which goes first, so each command runs in each position equally often.
            k = i % len(round_)
            for samples, argv in round_[k:] + round_[:k]:
                samples.append(timed(argv))
            pair = [
                (keyd_rsa, [KEYCTL, "gen", "rsa", "--bits", "4096"]),
                (openssl_rsa, ["openssl", "genrsa", "4096"]),
            ]
            if i % 2:
                pair.reverse()
            for samples, argv in pair:
                samples.append(timed(argv))
        finally:
            shutil.rmtree(work)

    def row(name, xs):
        return f"  {name:44} median {statistics.median(xs):7.3f} s   (min {min(xs):.3f}, max {max(xs):.3f})"

    print(f"{runs} alternating runs each, {os.cpu_count()} cores")
    print("FlowKit secrets, fresh home each run:")
    print(row("keyctl quickstart policies/flowkit.toml", keyd))
    print(row("openssl script (bench/flowkit-openssl.sh)", anchor))
    print(f"  ratio (anchor / keyctl, medians): {statistics.median(anchor) / statistics.median(keyd):.2f}x")
    if a.old:
        print(row(f"--old {os.path.basename(a.old)}", old))
        print(f"  ratio (anchor / --old, medians): {statistics.median(anchor) / statistics.median(old):.2f}x")
        pairs = statistics.median(n / o for n, o in zip(keyd, old))
        print(f"  this build / --old, median of {runs} same-round ratios: {pairs:.2f}")
    print("RSA-4096 key generation:")
    print(row("keyctl gen rsa --bits 4096", keyd_rsa))
    print(row("openssl genrsa 4096", openssl_rsa))
    print(f"  ratio (openssl / keyctl, medians): {statistics.median(openssl_rsa) / statistics.median(keyd_rsa):.2f}x")


if __name__ == "__main__":
    main()
