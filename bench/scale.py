#!/usr/bin/env python3
"""Benchmark: how keyctl's cost grows with the number of secrets, an older revision (OLD)
against the current build (NEW) in the same run. For N password secrets (default 100, 1000,
10000) delivered by a files sink, each run measures on a fresh home and out dir:
quickstart, apply with nothing changed, rotate of one secret (no daemon: the store directly),
show of one secret (stdout discarded), peak RSS of each command, and the size of store.age.
OLD and NEW alternate run by run, and which goes first alternates too, so both see the same
machine noise. Homes are removed at the end, not between runs: ext4 without a journal (as on
the development VM) skips, by a linear scan at every inode it allocates, inodes freed in the
last 60 s (360 s while their block is dirty), so a quickstart that follows the removal of the
previous run's 20,000 files took 3 to 6 s instead of 0.7 s. Prints medians and old/new ratios as a markdown table, then per binary the
growth from the second-largest to the largest N (at most the size factor: linear or better).
Usage: python3 bench/scale.py [--new PATH|none] [--old REV|PATH|none] [--sizes 100,1000,10000]
                              [--runs 5] [--json FILE] [--tmp DIR] [--timeout 300]
NEW defaults to target/release/keyctl (run `cargo build --release -p keyctl` first). OLD is
built from `git archive REV` under /tmp with its own CARGO_TARGET_DIR, and reused next time;
a path to a keyctl binary is used as it is (two builds of one revision, e.g. two profiles).
Linux only: peak RSS is wait4's ru_maxrss (KiB), read as a child subreaper (see LAUNCH)."""

import argparse
import ctypes
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLD_TARGET = "/tmp/keyd-bench-old-target"
ENV = {k: v for k, v in os.environ.items() if k not in ("KEYD_HOME", "KEYD_SOCKET")}
TIMES = ("quickstart", "apply", "rotate", "show")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# Linux starts a child's ru_maxrss at its parent's peak RSS (the high-water mark survives fork
# and exec), so a command started from this ~15 MiB Python would never show less. Each command
# is forked by a small sh that exits first; this process, a child subreaper, then reaps the
# command itself with wait4. The command waits on stdin for the go, so the clock starts there.
LAUNCH = 'exec 3<&0; { read _ <&3; exec "$@" 3<&- </dev/null >/dev/null; } & echo $!'


def run(argv, timeout, cwd=None, env=ENV):
    """Runs argv with stdout discarded; returns (seconds, peak RSS KiB). On failure prints its
    stderr and exits 1."""
    with tempfile.TemporaryFile() as err:
        sh = subprocess.Popen(["sh", "-c", LAUNCH, "sh", *argv], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=err, cwd=cwd, env=env)
        pid = int(sh.stdout.readline())
        sh.wait()
        sh.stdout.close()
        state = {"done": False, "killed": False}

        def kill():
            if not state["done"]:
                state["killed"] = True
                os.kill(pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        start = time.perf_counter()
        sh.stdin.write(b"go\n")
        sh.stdin.close()
        try:
            _, status, usage = os.wait4(pid, 0)
        finally:
            state["done"] = True
            timer.cancel()
        elapsed = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            why = f"timed out after {timeout} s" if state["killed"] else f"exit {code}"
            log(f"FAILED ({why}): {' '.join(argv)}\n{err.read().decode(errors='replace')}")
            sys.exit(1)
        return elapsed, usage.ru_maxrss


def git(*args):
    return subprocess.run(["git", "-C", ROOT, *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def build_old(rev, timeout):
    """keyctl of revision rev, built in release mode outside the repository; reused if built."""
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    src = f"/tmp/keyd-bench-old-{sha[:12]}"
    binary = f"{src}.keyctl"
    if os.path.exists(binary):
        log(f"OLD: reusing {binary} (keyctl at {sha[:12]})")
        return sha, binary
    shutil.rmtree(src, ignore_errors=True)
    os.makedirs(src)
    log(f"OLD: extracting {sha[:12]} into {src}")
    archive = subprocess.Popen(["git", "-C", ROOT, "archive", "--format=tar", sha],
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", src], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        sys.exit(f"git archive {sha} failed")
    log(f"OLD: cargo build --release --locked -p keyctl (CARGO_TARGET_DIR={OLD_TARGET})")
    seconds, _ = run(["cargo", "build", "--release", "--locked", "-p", "keyctl"], timeout,
                     cwd=src, env={**ENV, "CARGO_TARGET_DIR": OLD_TARGET})
    shutil.copy2(os.path.join(OLD_TARGET, "release", "keyctl"), binary)
    log(f"OLD: built {binary} (keyctl at {sha[:12]}) in {seconds:.0f} s")
    return sha, binary


def name(i, n):
    return f"P{i:0{max(5, len(str(n)))}d}"


def write_policy(path, n):
    with open(path, "w") as f:
        f.write(f'[stack]\nname = "scale"\ndescription = "{n} passwords"\n')
        for i in range(1, n + 1):
            f.write(f'\n[secrets.{name(i, n)}]\nkind = "password"\nlength = 32\n')


def fs_type(path):
    """The file system type of the mount holding path (Linux), or None."""
    best, kind = "", None
    try:
        with open("/proc/mounts") as f:
            for line in f:
                mnt, typ = line.split()[1:3]
                inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best):
                    best, kind = mnt, typ
    except OSError:
        pass
    return kind


def one_run(keyctl, policy, n, work, timeout):
    """quickstart, apply, rotate and show on a fresh home in the new directory work; returns
    the figures of one run."""
    home, out, target = f"{work}/home", f"{work}/out", name(n // 2 + 1, n)
    base = [keyctl, "--home", home]
    argvs = {
        "quickstart": base + ["quickstart", "--policy", policy, "--out", out],
        "apply": base + ["apply", "--policy", policy, "--out", out],
        "rotate": base + ["rotate", target],
        "show": base + ["show", target],
    }
    fig = {}
    for measure, argv in argvs.items():
        fig[measure], fig[f"rss_{measure}_kib"] = run(argv, timeout)
        if measure == "quickstart":
            fig["store_bytes"] = os.path.getsize(os.path.join(home, "store.age"))
    fig["rss_kib"] = max(fig[f"rss_{m}_kib"] for m in TIMES)
    return fig


MEASURES = [(m, f"{m} (s)", 1.0, "{:.3f}") for m in TIMES] + [
    ("rss_kib", "peak RSS (MiB)", 1 / 1024, "{:.1f}"),
    ("store_bytes", "store.age (KiB)", 1 / 1024, "{:.1f}"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--new", default=os.path.join(ROOT, "target", "release", "keyctl"),
                    help="keyctl binary, or none")
    ap.add_argument("--old", default="75441b2", help="git revision, or none")
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", metavar="FILE", help="save every run's figures")
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help="where homes are made")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per command")
    a = ap.parse_args()
    if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        sys.exit("needs Linux: prctl(PR_SET_CHILD_SUBREAPER) failed")
    sizes = [int(s) for s in a.sizes.split(",")]
    if a.new != "none" and not os.access(a.new, os.X_OK):
        sys.exit(f"no keyctl at {a.new}: cargo build --release -p keyctl")
    if fs_type(os.path.realpath(a.tmp)) in ("tmpfs", "ramfs"):
        log(f"warning: {a.tmp} is in memory; pass --tmp DIR on a disk for real store I/O")
    bins = {}
    old_sha = ""
    if a.old != "none" and os.access(a.old, os.X_OK) and os.path.isfile(a.old):
        bins["old"] = os.path.abspath(a.old)
    elif a.old != "none":
        old_sha, bins["old"] = build_old(a.old, max(a.timeout, 3600))
    if a.new != "none":
        bins["new"] = os.path.abspath(a.new)
    if not bins:
        sys.exit("nothing to measure: --old none and --new none")

    raw = {b: {n: [] for n in sizes} for b in bins}
    # Every run's home and out dir, removed once all are measured (see the module comment).
    runs_dir = tempfile.mkdtemp(prefix="keyd-scale-runs-", dir=a.tmp)
    policies = os.path.join(runs_dir, "policies")
    os.mkdir(policies)
    try:
        for n in sizes:
            policy = os.path.join(policies, f"scale-{n}.toml")
            write_policy(policy, n)
            for b, keyctl in bins.items():
                run([keyctl, "policy", "check", policy], a.timeout)
            for i in range(a.runs):
                order = list(bins.items())
                if i % 2:  # alternate which goes first
                    order.reverse()
                for b, keyctl in order:
                    work = os.path.join(runs_dir, f"{n}-{i}-{b}")
                    os.mkdir(work)
                    fig = one_run(keyctl, policy, n, work, a.timeout)
                    raw[b][n].append(fig)
                    times = ", ".join(f"{m} {fig[m]:.3f} s" for m in TIMES)
                    log(f"N={n} run {i + 1}/{a.runs} {b}: {times}, "
                        f"RSS {fig['rss_kib'] / 1024:.1f} MiB")
    finally:
        shutil.rmtree(runs_dir)

    def med(b, n, key):
        return statistics.median(f[key] for f in raw[b][n])

    print(f"{a.runs} alternating runs per N, {os.cpu_count()} cores, homes under {a.tmp}")
    for b, keyctl in bins.items():
        rev = f" (built from {old_sha[:12]})" if b == "old" and old_sha else ""
        print(f"- {b.upper()}: {keyctl}{rev}")
    print()
    cols = list(bins)
    head = ["N", "measure"] + [f"{b} median" for b in cols]
    head += ["old/new"] if len(cols) == 2 else []
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---:" if h != "measure" else "---" for h in head) + "|")
    for n in sizes:
        for key, label, scale, fmt in MEASURES:
            row = [f"{n:,}", label] + [fmt.format(med(b, n, key) * scale) for b in cols]
            if len(cols) == 2:
                row.append(f"{med('old', n, key) / med('new', n, key):.2f}")
            print("| " + " | ".join(row) + " |")
    if len(sizes) >= 2:
        lo, hi = sorted(sizes)[-2:]
        print(f"\nGrowth from N={lo:,} to N={hi:,} (ratio of medians; linear is {hi / lo:g}):")
        for b in cols:
            print(f"- {b.upper()}: " + ", ".join(
                f"{label.split(' (')[0]} {med(b, hi, key) / med(b, lo, key):.1f}"
                for key, label, _, _ in MEASURES))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": a.runs, "sizes": sizes, "binaries": bins,
                       "old_rev": old_sha or None,
                       "figures": {b: {str(n): raw[b][n] for n in sizes} for b in bins}},
                      f, indent=1)
        log(f"wrote {a.json}")


if __name__ == "__main__":
    main()
