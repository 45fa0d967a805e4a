#!/usr/bin/env python3
"""Benchmark: `keyctl quickstart` on policies/flowkit.toml against the openssl-based anchor
(bench/flowkit-openssl.sh), alternating runs in the same process so both see the same machine
noise; then RSA-4096 generation, `keyctl gen rsa` against `openssl genrsa 4096`, alternating.
Prints medians and ratios. Usage: python3 bench/quickstart.py [RUNS]   (default 15)
Builds nothing: run `cargo build --release -p keyctl` first."""

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
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    if not os.path.exists(KEYCTL):
        sys.exit("build first: cargo build --release -p keyctl")
    keyd, anchor, keyd_rsa, openssl_rsa = [], [], [], []
    for i in range(runs):
        work = tempfile.mkdtemp(prefix="keyd-bench-")
        try:
            pair = [
                (keyd, [KEYCTL, "--home", f"{work}/home", "quickstart", "--policy", POLICY, "--out", f"{work}/out"]),
                (anchor, ["bash", ANCHOR, f"{work}/anchor"]),
            ]
            if i % 2:  # alternate which goes first
                pair.reverse()
            for samples, argv in pair:
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
    print("RSA-4096 key generation:")
    print(row("keyctl gen rsa --bits 4096", keyd_rsa))
    print(row("openssl genrsa 4096", openssl_rsa))
    print(f"  ratio (openssl / keyctl, medians): {statistics.median(openssl_rsa) / statistics.median(keyd_rsa):.2f}x")


if __name__ == "__main__":
    main()
