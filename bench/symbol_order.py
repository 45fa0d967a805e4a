#!/usr/bin/env python3
"""Records which functions the keyd daemon runs from start to idle, and writes them to
keyd/link/keyd.order, the symbol ordering file keyd's build hands the linker (keyd/build.rs).

Why: the kernel maps a program's code 64 KiB at a time around each page it touches
(fault-around), so code run at start-up and while idle that lies scattered over the binary's
9 MB of text keeps most of it resident. Linked together, the same code fits in a few hundred
KiB: idle RSS 9.6 MiB → 5.1 MiB (docs/benchmarks.md).

The run: a FlowKit home (keyctl quickstart, file store); keyd under valgrind's callgrind
(which names every function run, in every thread) until its socket answers, idle, one
`keyctl rotate` through it, idle, SIGINT. Names are taken as the binary spells them (v0
mangling; local functions carry a `.N` suffix that changes with the code around them), or
resolved from the addresses callgrind could not name. A name the next build no longer has is ignored by the linker (the file ages
gracefully, code that changed is just not ordered): run this again after large changes.
Usage: python3 bench/symbol_order.py [--bin DIR]
DIR defaults to target/release (run `cargo build --release` first)."""

import argparse
import bisect
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER = os.path.join(ROOT, "keyd", "link", "keyd.order")


def functions(binary):
    """(start addresses, [(name, size)]) of the binary's functions, by address."""
    out = subprocess.run(["nm", "-n", "-S", "--defined-only", binary],
                         check=True, capture_output=True, text=True).stdout
    starts, syms = [], []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tTwW":
            starts.append(int(parts[0], 16))
            syms.append((parts[3], int(parts[1], 16)))
    return starts, syms


def wait_for(path, proc, limit=180):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"keyd exited with {proc.returncode} before serving {path}")
        time.sleep(0.2)
    raise RuntimeError(f"{path} did not appear within {limit} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    args = ap.parse_args()
    keyd, keyctl = (os.path.join(args.bin, b) for b in ("keyd", "keyctl"))
    if not shutil.which("valgrind"):
        sys.exit("valgrind is needed (apt-get install valgrind)")
    tmp = tempfile.mkdtemp(prefix="keyd-symbol-order-")
    try:
        home = os.path.join(tmp, "home")
        subprocess.run([keyctl, "--home", home, "quickstart", "--policy",
                        os.path.join(ROOT, "policies", "flowkit.toml"), "--out",
                        os.path.join(tmp, "out")], check=True, stdout=subprocess.DEVNULL)
        profile = os.path.join(tmp, "callgrind.out")
        env = {k: v for k, v in os.environ.items() if k not in ("KEYD_SOCKET", "KEYD_STORE")}
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--demangle=no",
                                 f"--callgrind-out-file={profile}", keyd, "--home", home],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(os.path.join(home, "keyd.sock"), proc)
            time.sleep(2)
            # The first dump holds start-up and idle, the last what a rotation adds.
            subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True,
                           capture_output=True)
            subprocess.run([keyctl, "--home", home, "rotate", "SECRET_KEY"], env=env,
                           check=True, stdout=subprocess.DEVNULL, timeout=120)
            time.sleep(2)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
        starts, syms = functions(keyd)
        known = {name for name, _ in syms}

        def run_in(dump):
            run = set()
            with open(dump) as f:
                for line in f:
                    m = re.match(r"^c?fn=\(\d+\) (\S+)$", line.strip())
                    if not m:
                        continue
                    name = m.group(1)
                    if name in known:
                        run.add(name)
                    elif name.startswith("0x"):
                        i = bisect.bisect_right(starts, int(name, 16)) - 1
                        if i >= 0 and int(name, 16) < starts[i] + max(syms[i][1], 1):
                            run.add(syms[i][0])
            return run

        dumps = sorted((p for p in os.listdir(tmp) if p.startswith("callgrind.out")),
                       key=lambda p: int(p.rsplit(".", 1)[1]) if p[-1].isdigit() else 1 << 30)
        idle = run_in(os.path.join(tmp, dumps[0]))
        rotation = set().union(*(run_in(os.path.join(tmp, d)) for d in dumps[1:])) - idle
        sizes = dict(syms)
        with open(ORDER, "w") as f:
            f.writelines(name + "\n" for name in sorted(idle) + sorted(rotation))
        kib = lambda names: sum(sizes[n] for n in names) / 1024
        print(f"start-up and idle: {len(idle)} functions, {kib(idle):.0f} KiB; a rotation: "
              f"{len(rotation)} more, {kib(rotation):.0f} KiB; of {kib(sizes):.0f} KiB in all; "
              f"written to {os.path.relpath(ORDER, ROOT)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
