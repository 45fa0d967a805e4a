#!/usr/bin/env python3
"""Benchmark: a rotation into a running Swarm service, until every task runs on the new secret.

keyd (`keyctl rotate`, which creates the secret, repoints the service start-first and waits for
the rolling update) against the anchor, the same job by hand with the docker CLI as an operator
does it today: `docker secret create` with a new value, then
`docker service update --secret-rm OLD --secret-add source=NEW,target=T --update-order start-first`
(which also waits for the update to converge). Alternating in one run, for 1 and 3 replicas;
medians of RUNS. Afterwards every running task is checked to reference the new secret.

Usage: python3 bench/swarm_rotate.py [RUNS]   (default 5; needs `cargo build --release`, a
Docker engine, and Debian's busybox-static for the consumer image; makes a swarm and leaves it
again if there was none, and removes everything it made)."""

import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYCTL = os.path.join(ROOT, "target", "release", "keyctl")
ID = "bench" + secrets.token_hex(3)


def sh(*args, check=True):
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if check and out.returncode != 0:
        raise RuntimeError(f"{args} failed: {out.stderr}")
    return out.stdout.strip()


def timed(*args, env=None):
    start = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    took = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{args} failed: {out.stderr}{out.stdout}")
    return took


def service_secrets(name):
    spec = json.loads(sh("docker", "service", "inspect", name))[0]["Spec"]
    return [s["SecretName"] for s in spec["TaskTemplate"]["ContainerSpec"].get("Secrets", [])]


def running_tasks_on(name, secret):
    """Every running task of the service references `secret`."""
    tasks = sh("docker", "service", "ps", name, "--filter", "desired-state=running", "-q").split()
    for t in tasks:
        spec = json.loads(sh("docker", "inspect", t))[0]["Spec"]["ContainerSpec"]
        if [s["SecretName"] for s in spec.get("Secrets", [])] != [secret]:
            return False
    return len(tasks) > 0


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    made_swarm = sh("docker", "info", "--format", "{{.Swarm.LocalNodeState}}") != "active"
    if made_swarm:
        sh("docker", "swarm", "init", "--advertise-addr", "127.0.0.1")
    tmp = tempfile.mkdtemp(prefix="keyd-bench-swarm-")
    image = f"keyd-bench-consumer:{ID}"
    services = []
    try:
        ctx = os.path.join(tmp, "ctx")
        os.makedirs(ctx)
        shutil.copy("/bin/busybox", ctx)
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write('FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n')
        sh("docker", "build", "-q", "-t", image, ctx)
        home = os.path.join(tmp, "home")
        policy = os.path.join(tmp, "p.toml")
        with open(policy, "w") as f:
            f.write(f'[stack]\nname = "{ID}"\n\n[sinks.swarm]\nprefix = "{ID}_"\n\n'
                    '[secrets.db_password]\nkind = "password"\nlength = 24\n')
        env = dict(os.environ, KEYD_HOME=home)
        subprocess.run([KEYCTL, "quickstart", "--swarm", "--policy", policy], env=env,
                       check=True, capture_output=True, timeout=300)
        results = {}
        for replicas in (1, 3):
            keyd_svc, cli_svc = f"{ID}-keyd-{replicas}", f"{ID}-cli-{replicas}"
            # The anchor's own secret, rotated by hand.
            value = secrets.token_urlsafe(18)
            subprocess.run(["docker", "secret", "create", f"{ID}_cli_{replicas}_0", "-"],
                           input=value, text=True, check=True, capture_output=True)
            status = json.loads(subprocess.run([KEYCTL, "status", "--json"], env=env, check=True,
                                               capture_output=True, text=True).stdout)
            keyd_now = status[0]["swarm"]["db_password"]
            for name, secret in ((keyd_svc, keyd_now), (cli_svc, f"{ID}_cli_{replicas}_0")):
                sh("docker", "service", "create", "--detach=false", "-q", "--name", name,
                   "--replicas", str(replicas), "--update-order", "start-first",
                   "--secret", f"source={secret},target=db_password", image,
                   "sh", "-c", "while true; do cat /run/secrets/db_password >/dev/null; sleep 1; done")
                services.append(name)
            current_cli = f"{ID}_cli_{replicas}_0"
            keyd_times, cli_times = [], []
            for run in range(1, runs + 1):
                keyd_times.append(timed(KEYCTL, "rotate", "db_password", env=env))
                new = f"{ID}_cli_{replicas}_{run}"
                start = time.perf_counter()
                subprocess.run(["docker", "secret", "create", new, "-"], input=secrets.token_urlsafe(18),
                               text=True, check=True, capture_output=True)
                sh("docker", "service", "update", "--detach=false", "-q", "--secret-rm", current_cli,
                   "--secret-add", f"source={new},target=db_password", "--update-order", "start-first",
                   cli_svc)
                cli_times.append(time.perf_counter() - start)
                sh("docker", "secret", "rm", current_cli)
                current_cli = new
                # Removing the old secret is outside both timings: keyd's retire here, the
                # anchor's `docker secret rm` after its timing above.
                subprocess.run([KEYCTL, "retire", "db_password"], env=env, check=True,
                               capture_output=True, timeout=300)
            keyd_now = service_secrets(keyd_svc)[0]
            assert running_tasks_on(keyd_svc, keyd_now), "a keyd service task is not on the new secret"
            assert running_tasks_on(cli_svc, current_cli), "an anchor task is not on the new secret"
            k, c = statistics.median(keyd_times), statistics.median(cli_times)
            results[replicas] = (k, c)
            print(f"replicas={replicas}: keyctl rotate {k:.2f} s, docker CLI by hand {c:.2f} s, "
                  f"ratio {c / k:.2f}x (medians of {runs})", flush=True)
            for name in (keyd_svc, cli_svc):
                sh("docker", "service", "rm", name)
                services.remove(name)
            time.sleep(2)
            subprocess.run(["docker", "secret", "rm", current_cli], capture_output=True)
        print(json.dumps({str(r): {"keyd_s": k, "cli_s": c} for r, (k, c) in results.items()}))
    finally:
        for name in services:
            subprocess.run(["docker", "service", "rm", name], capture_output=True)
        time.sleep(2)
        ids = sh("docker", "secret", "ls", "-q", "--filter", f"name={ID}", check=False).split()
        if ids:
            subprocess.run(["docker", "secret", "rm", *ids], capture_output=True)
        subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if made_swarm:
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True)


if __name__ == "__main__":
    main()
