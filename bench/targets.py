#!/usr/bin/env python3
"""Benchmark: a password rotation per target type, keyd against the servers' own clients.

One rotation (set -> test -> promote) by keyd, and the same done by hand with the servers' own
clients, alternating in one run.

Each target gets real servers started here as the target tests start them (tests/support/):
MariaDB (`mariadb-install-db`, then `mariadbd` as Debian's `mysql` user), RabbitMQ (from
/usr/lib/rabbitmq/bin as the `rabbitmq` user, with its own HOME, Erlang cookie, node name, ports
and a private epmd), PostgreSQL with PgBouncer in front (`auth_file`, `auth_type =
scram-sha-256`, both as the `postgres` user), each in a temporary directory on free loopback
ports, all stopped (epmd too) and removed at the end. Each side has its own account, so no side
rotates another's.

What is timed, each run (wall time of the commands, from this process):
  keyctl     `keyctl rotate bench/DB_PASSWORD` (release build, no daemon: the store under its
             lock): a new password generated, set at the server, tested with a new login,
             delivered by the files sink (a file replaced atomically, fsynced), promoted, with
             the store (its journal) written and fsynced between steps as docs/rotation.md says. The store is made by `keyctl quickstart` of a policy
             with that target (`strategy = "single"`; the admin password from `password_file`).
  keyd       the same command with a `keyd` daemon running on its own home and socket: keyctl
             sends the request to the daemon, which runs the same rotation.
  hand       `openssl rand -base64 24`, then with the server's own clients:
    mysql      `mariadb -e "ALTER USER 'hand'@'%' IDENTIFIED BY '...'"` as the admin over TCP
               (the statement on stdin), then a new login `mariadb -e 'SELECT 1'` as `hand`.
               keyd sends `ALTER USER ... IDENTIFIED WITH mysql_native_password AS '*hash'`
               from its own client and logs in with it.
    rabbitmq   `rabbitmqctl change_password hand ...`, then `rabbitmqctl authenticate_user hand
               ...` (each an Erlang VM, as Debian's `rabbitmq` user against the node). keyd
               reads the user's tags, PUTs a `password_hash` through the management API and
               proves the login with an AMQP 0-9-1 handshake that opens the vhost.
    pgbouncer  one `psql` session as the PostgreSQL admin: `ALTER ROLE hand PASSWORD '...'` and
               `SELECT rolpassword FROM pg_authid` (the server's SCRAM verifier), the role's line
               of userlist.txt replaced (in this process: a temporary file renamed over it, no
               fsync), `psql ... pgbouncer -c RELOAD` on the admin console, then a new login
               through the pooler `psql -c 'SELECT 1'` as `hand`. keyd computes the verifier,
               sends `ALTER ROLE`, rewrites auth_file (fsync, rename, fsync of the directory),
               sends RELOAD and logs in through the pooler.
  Both hand runs end by writing the password to a file (temporary file renamed, no fsync), as
  keyd's files sink does. The hand runs keep no journal, no history, no encrypted store and no
  fsync: they are the least a careful person types, so they are a lower bound on doing it by
  hand, not a copy of keyd's guarantees.
Which of the three goes first rotates from run to run, after one untimed warm-up round.
Prints a markdown table of medians and hand/keyd ratios (above 1: keyd is faster), with the
median time, measured in each round, of a small file's fsync, rename and directory fsync: keyd's
store writes are made of these (about twenty fsyncs a rotation) and the hand runs of none, so
the ratio moves with the disk's flush latency, which on a shared VM changes from minute to
minute.
Usage: python3 bench/targets.py [--bin DIR] [--runs 7] [--targets mysql,rabbitmq,pgbouncer]
                                [--no-daemon]
DIR defaults to target/release (run `cargo build --release -p keyctl -p keyd` first). Linux
only; run as root (as CI does) the servers drop to their Debian users, else run as the caller."""

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
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IS_ROOT = os.geteuid() == 0
ENV = {k: v for k, v in os.environ.items() if k not in ("KEYD_HOME", "KEYD_SOCKET", "KEYD_STORE")}
# Every command run here, servers' start-up aside, must end within this many seconds.
STEP_TIMEOUT = 120
SIDES = ("keyctl", "keyd", "hand")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def as_user(user, argv):
    """argv run as Debian's `user` when this runs as root (the servers refuse root or drop it)."""
    if IS_ROOT:
        return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]
    return list(argv)


def run(argv, env=None, input=None, check=True):
    """Runs argv; returns stdout (text). On failure exits with its stderr."""
    out = subprocess.run(argv, env=env or ENV, input=input, capture_output=True, text=True,
                         timeout=STEP_TIMEOUT)
    if check and out.returncode != 0:
        raise SystemExit(f"FAILED (exit {out.returncode}): {' '.join(argv)}\n{out.stderr}")
    return out.stdout


def wait_until(what, ready, limit, proc=None, why=lambda: ""):
    deadline = time.monotonic() + limit
    while not ready():
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            raise SystemExit(f"{what} did not start within {limit} s\n{why()}")
        time.sleep(0.1)


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def write_file(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def replace_file(path, text, mode):
    """What a person's editor or `sed -i` does: a temporary file renamed over `path`."""
    tmp = f"{path}.tmp"
    write_file(tmp, text, mode)
    os.rename(tmp, path)


def new_password():
    return run(["openssl", "rand", "-base64", "24"]).strip()


def read(path):
    with open(path) as f:
        return f.read()


class Servers:
    """Processes to stop at the end, newest first."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.stops = []

    def dir(self, tag):
        d = tempfile.mkdtemp(prefix=f"{tag}-", dir=self.tmp)
        os.chmod(d, 0o777)  # the servers run as their own users
        return d

    def on_stop(self, fn):
        self.stops.append(fn)

    def stop_all(self):
        for fn in reversed(self.stops):
            try:
                fn()
            except Exception as e:  # stop the others regardless
                log(f"stopping: {e}")


def stop_process(proc, grace=10):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- MariaDB -----------------------------------------------------------------------------

class Mariadb:
    def __init__(self, servers):
        d = servers.dir("mariadb")
        os.mkdir(os.path.join(d, "tmp"))
        os.chmod(os.path.join(d, "tmp"), 0o777)
        options = ["--no-defaults", f"--datadir={d}/data", f"--tmpdir={d}/tmp",
                   "--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M", "--skip-log-bin",
                   "--skip-name-resolve"] + (["--user=mysql"] if IS_ROOT else [])
        run(["mariadb-install-db", *options, "--skip-test-db",
             "--auth-root-authentication-method=normal"])
        self.dir, self.port = d, free_port()
        self.sock = os.path.join(d, "sock")
        proc = subprocess.Popen(
            ["/usr/sbin/mariadbd", *options, f"--port={self.port}", "--bind-address=127.0.0.1",
             f"--socket={self.sock}", f"--pid-file={d}/pid", f"--log-error={d}/error.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers.on_stop(lambda: stop_process(proc, 30))
        ping = ["mariadb-admin", "--no-defaults", "-uroot", "--connect-timeout=2",
                f"--socket={self.sock}", "ping"]
        wait_until("mariadbd", lambda: subprocess.run(ping, capture_output=True).returncode == 0,
                   60, proc, lambda: read(f"{d}/error.log"))
        self.admin_password = new_password()
        self.root_sql(f"CREATE USER 'admin'@'127.0.0.1' IDENTIFIED BY '{self.admin_password}'; "
                      "GRANT ALL PRIVILEGES ON *.* TO 'admin'@'127.0.0.1' WITH GRANT OPTION; "
                      f"CREATE USER 'hand'@'%' IDENTIFIED BY '{new_password()}'")

    def root_sql(self, sql):
        run(["mariadb", "--no-defaults", "-uroot", f"--socket={self.sock}"], input=sql)

    def client(self, user, password, sql):
        """The `mariadb` client over TCP as `user`, the SQL on stdin, the password in its env."""
        env = dict(ENV, MYSQL_PWD=password)
        return run(["mariadb", "--no-defaults", "-N", "-B", "--connect-timeout=5", "-h",
                    "127.0.0.1", "-P", str(self.port), "-u", user], env=env, input=sql)

    def target(self, admin_file):
        return (f'type = "mysql"\nurl = "mysql://admin@127.0.0.1:{self.port}/"\n'
                f'password_file = "{admin_file}"\n', 'user = "{user}"')

    def hand(self, out_file):
        password = new_password()
        self.client("admin", self.admin_password,
                    f"ALTER USER 'hand'@'%' IDENTIFIED BY '{password}';")
        if self.client("hand", password, "SELECT 1;").strip() != "1":
            raise SystemExit("mariadb: the new password did not log in")
        replace_file(out_file, password, 0o600)


# ---- RabbitMQ ----------------------------------------------------------------------------

class Rabbitmq:
    def __init__(self, servers):
        d = servers.dir("rabbitmq")
        self.amqp, self.http = free_port(), free_port()
        dist, epmd_port = free_port(), free_port()
        write_file(f"{d}/rabbitmq.conf",
                   f"listeners.tcp.default = 127.0.0.1:{self.amqp}\nmanagement.tcp.port = "
                   f"{self.http}\nmanagement.tcp.ip = 127.0.0.1\nloopback_users = none\n", 0o644)
        write_file(f"{d}/enabled_plugins", "[rabbitmq_management].\n", 0o644)
        write_file(f"{d}/.erlang.cookie", f"KEYDBENCH{os.getpid()}{self.amqp}", 0o400)
        for sub in ("mnesia", "log"):
            os.mkdir(f"{d}/{sub}")
        if IS_ROOT:
            run(["chown", "-R", "rabbitmq:rabbitmq", d])
        self.env = dict(ENV, HOME=d, RABBITMQ_NODENAME=f"keydbench{os.getpid()}x{self.amqp}@localhost",
                        RABBITMQ_NODE_PORT=str(self.amqp), RABBITMQ_DIST_PORT=str(dist),
                        RABBITMQ_MNESIA_BASE=f"{d}/mnesia", RABBITMQ_LOG_BASE=f"{d}/log",
                        RABBITMQ_CONFIG_FILE=f"{d}/rabbitmq.conf",
                        RABBITMQ_ENABLED_PLUGINS_FILE=f"{d}/enabled_plugins",
                        ERL_EPMD_PORT=str(epmd_port))
        epmd = subprocess.Popen(["epmd", "-port", str(epmd_port), "-address", "127.0.0.1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers.on_stop(lambda: stop_process(epmd))
        wait_until("epmd", lambda: port_open(epmd_port), 10, epmd)
        node = subprocess.Popen(as_user("rabbitmq", ["/usr/lib/rabbitmq/bin/rabbitmq-server"]),
                                env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def stop():
            # `rabbitmqctl stop` ends the Erlang VM, which the start script does not exec into.
            subprocess.run(self.ctl_argv("stop"), env=self.env, capture_output=True, timeout=60)
            stop_process(node, 30)
        servers.on_stop(stop)
        wait_until("rabbitmq-server", lambda: self.api("GET", "/api/overview") is not None, 120,
                   node, lambda: "".join(read(f"{d}/log/{f}") for f in os.listdir(f"{d}/log")))
        self.admin_password = new_password()
        self.api("PUT", "/api/users/admin", {"password": self.admin_password, "tags": "administrator"})
        self.api("PUT", "/api/permissions/%2F/admin", {"configure": ".*", "write": ".*", "read": ".*"})
        self.api("PUT", "/api/users/hand", {"password": new_password(), "tags": ""})

    def api(self, method, path, body=None):
        """A management API call as `guest`; the answer, or None when the node does not answer."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http}{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.read()
        except OSError:
            if method != "GET":
                raise
            return None

    def ctl_argv(self, *args):
        return as_user("rabbitmq", ["/usr/lib/rabbitmq/bin/rabbitmqctl", *args])

    def target(self, admin_file):
        return (f'type = "rabbitmq"\nurl = "http://admin@127.0.0.1:{self.http}"\n'
                f'amqp = "amqp://127.0.0.1:{self.amqp}/"\npassword_file = "{admin_file}"\n',
                'user = "{user}", vhost = "/"')

    def hand(self, out_file):
        password = new_password()
        run(self.ctl_argv("change_password", "hand", password), env=self.env)
        run(self.ctl_argv("authenticate_user", "hand", password), env=self.env)
        replace_file(out_file, password, 0o600)


# ---- PostgreSQL and PgBouncer ------------------------------------------------------------

def pg_bin(name):
    base = "/usr/lib/postgresql"
    versions = sorted((v for v in os.listdir(base) if os.path.exists(f"{base}/{v}/bin/{name}")),
                      key=lambda v: int(v) if v.isdigit() else 0)
    if not versions:
        raise SystemExit(f"no {name} under {base} (Debian's postgresql)")
    return f"{base}/{versions[-1]}/bin/{name}"


def psql(port, user, password, db, sql):
    """`psql` on a new connection over TCP, the SQL on stdin, the password in its env."""
    env = dict(ENV, PGPASSWORD=password, PGCONNECT_TIMEOUT="5")
    return run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port),
                "-U", user, "-d", db, "-tA"], env=env, input=sql)


class Pgbouncer:
    def __init__(self, servers):
        d = servers.dir("pg")
        self.pg_admin = new_password()
        write_file(f"{d}/pwfile", self.pg_admin, 0o644)
        run(as_user("postgres", [pg_bin("initdb"), "-D", f"{d}/data", "-U", "admin",
                                 "--auth=scram-sha-256", "--no-sync", f"--pwfile={d}/pwfile"]))
        os.remove(f"{d}/pwfile")
        self.pg_port = free_port()
        run(as_user("postgres", [pg_bin("pg_ctl"), "-D", f"{d}/data", "-o",
                                 f"-p {self.pg_port} -k {d} -c listen_addresses=127.0.0.1",
                                 "-l", f"{d}/server.log", "-w", "-t", "60", "start"]))
        servers.on_stop(lambda: run(as_user("postgres", [pg_bin("pg_ctl"), "-D", f"{d}/data",
                                                         "-m", "immediate", "stop"]), check=False))
        psql(self.pg_port, "admin", self.pg_admin, "postgres",
             f"CREATE DATABASE app; CREATE ROLE hand LOGIN PASSWORD '{new_password()}';")
        verifier = self.verifier_of(self.pg_admin, "")
        b = servers.dir("pgbouncer")
        self.port, self.auth_file = free_port(), f"{b}/userlist.txt"
        self.admin_password = new_password()
        write_file(self.auth_file, f'"admin" "{self.admin_password}"\n"hand" "{verifier}"\n', 0o644)
        write_file(f"{b}/pgbouncer.ini",
                   f"[databases]\napp = host=127.0.0.1 port={self.pg_port} dbname=app\n\n"
                   f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.port}\n"
                   f"unix_socket_dir =\nauth_type = scram-sha-256\nauth_file = {self.auth_file}\n"
                   f"admin_users = admin\npool_mode = session\nlogfile = {b}/pgbouncer.log\n"
                   f"pidfile = {b}/pgbouncer.pid\n", 0o644)
        proc = subprocess.Popen(as_user("postgres", ["/usr/sbin/pgbouncer", f"{b}/pgbouncer.ini"]),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        servers.on_stop(lambda: stop_process(proc))
        wait_until("pgbouncer", lambda: port_open(self.port), 20, proc,
                   lambda: read(f"{b}/pgbouncer.log"))

    def verifier_of(self, admin_password, alter):
        """`alter` (SQL) then the role `hand`'s SCRAM verifier, in one admin session."""
        return psql(self.pg_port, "admin", admin_password, "postgres",
                    f"{alter}SELECT rolpassword FROM pg_authid WHERE rolname = 'hand';").strip()

    def target(self, admin_file, pool_admin_file):
        return (f'type = "postgres"\nurl = "postgres://admin@127.0.0.1:{self.pg_port}/app"\n'
                f'password_file = "{admin_file}"\npgbouncer = "pool"\n\n[targets.pool]\n'
                f'type = "pgbouncer"\nurl = "postgres://admin@127.0.0.1:{self.port}/pgbouncer"\n'
                f'auth_file = "{self.auth_file}"\npassword_file = "{pool_admin_file}"\n',
                'role = "{user}"')

    def hand(self, out_file):
        password = new_password()
        verifier = self.verifier_of(self.pg_admin, f"ALTER ROLE hand PASSWORD '{password}';\n")
        lines = [l for l in read(self.auth_file).splitlines(keepends=True)
                 if not l.startswith('"hand" ')]
        replace_file(self.auth_file, "".join(lines) + f'"hand" "{verifier}"\n', 0o644)
        psql(self.port, "admin", self.admin_password, "pgbouncer", "RELOAD;")
        if psql(self.port, "hand", password, "app", "SELECT 1;").strip() != "1":
            raise SystemExit("pgbouncer: the new password did not log in")
        replace_file(out_file, password, 0o600)


# ---- keyd --------------------------------------------------------------------------------

class KeydSide:
    """A home made by `keyctl quickstart` of a one-target policy for login `user`; with
    `daemon`, a keyd running on it that keyctl's rotations go through."""

    def __init__(self, bins, servers, kind, server, user, daemon):
        self.bins, self.kind = bins, kind
        d = tempfile.mkdtemp(prefix=f"keyd-{kind}-{user}-", dir=servers.tmp)
        self.home, self.out = f"{d}/home", f"{d}/out"
        admin = f"{d}/admin-password"
        if kind == "pgbouncer":
            write_file(admin, server.pg_admin)
            pool_admin = f"{d}/pool-admin-password"
            write_file(pool_admin, server.admin_password)
            target, login = server.target(admin, pool_admin)
        else:
            write_file(admin, server.admin_password)
            target, login = server.target(admin)
        policy = f"{d}/policy.toml"
        write_file(policy, f'[stack]\nname = "bench"\n\n[targets.db]\n{target}\n'
                           '[secrets.DB_PASSWORD]\nkind = "password"\n'
                           f'target = {{ name = "db", {login.format(user=user)}, strategy = "single" }}\n',
                   0o644)
        run([bins["keyctl"], "--home", self.home, "quickstart", "--policy", policy, "--out", self.out])
        # keyctl talks to a daemon at this socket when one answers; none answers without one.
        self.socket = f"{d}/keyd.sock" if daemon else f"{d}/none.sock"
        if daemon:
            proc = subprocess.Popen([bins["keyd"], "--home", self.home, "--socket", self.socket],
                                    env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            servers.on_stop(lambda: stop_process(proc))
            wait_until("keyd", lambda: os.path.exists(self.socket), 30, proc)

    def rotate(self):
        run([self.bins["keyctl"], "--home", self.home, "--socket", self.socket, "rotate",
             "bench/DB_PASSWORD"])


def fsync_cost(directory):
    """Seconds one small file's fsync, its rename and the directory's fsync take now (median
    of 3): keyd's store writes are made of these, and on a shared disk their cost moves by a
    factor of ten from minute to minute, so each round records it beside its times."""
    costs = []
    for _ in range(3):
        path = os.path.join(directory, "fsync-probe")
        start = time.perf_counter()
        with open(path + ".tmp", "w") as f:
            f.write("x")
            f.flush()
            os.fsync(f.fileno())
        os.rename(path + ".tmp", path)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        costs.append(time.perf_counter() - start)
    os.remove(path)
    return statistics.median(costs)


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


SERVERS = {"mysql": Mariadb, "rabbitmq": Rabbitmq, "pgbouncer": Pgbouncer}


def bench_target(kind, bins, servers, runs, sides):
    log(f"{kind}: starting servers")
    server = SERVERS[kind](servers)
    do = {}
    if "keyctl" in sides:
        do["keyctl"] = KeydSide(bins, servers, kind, server, "kcli", daemon=False).rotate
    if "keyd" in sides:
        do["keyd"] = KeydSide(bins, servers, kind, server, "kdaemon", daemon=True).rotate
    hand_out = os.path.join(servers.tmp, f"hand-{kind}-DB_PASSWORD")
    do["hand"] = lambda: server.hand(hand_out)
    order = [s for s in SIDES if s in do]
    samples = {s: [] for s in order}
    samples["fsync"] = []
    for s in order:  # warm-up: caches, first connections, the Erlang code path
        do[s]()
    for i in range(runs):
        k = i % len(order)
        for s in order[k:] + order[:k]:
            samples[s].append(timed(do[s]))
        samples["fsync"].append(fsync_cost(servers.tmp))
        log(f"{kind}: run {i + 1}/{runs}: " + ", ".join(f"{s} {samples[s][-1] * 1000:.0f} ms" for s in order)
            + f"; fsync+rename+fsync {samples['fsync'][-1] * 1000:.1f} ms")
    return samples


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--targets", default="mysql,rabbitmq,pgbouncer")
    ap.add_argument("--no-daemon", action="store_true", help="time keyctl alone, not through keyd")
    a = ap.parse_args()
    bins = {b: os.path.join(a.bin, b) for b in ("keyctl", "keyd")}
    for b in bins.values():
        if not os.access(b, os.X_OK):
            sys.exit(f"{b}: not built (cargo build --release -p keyctl -p keyd)")
    kinds = a.targets.split(",")
    for k in kinds:
        if k not in SERVERS:
            sys.exit(f"--targets: unknown {k!r} (expected some of {', '.join(SERVERS)})")
    sides = [s for s in SIDES if not (a.no_daemon and s == "keyd")]
    tmp = tempfile.mkdtemp(prefix="keyd-bench-targets-")
    os.chmod(tmp, 0o755)
    servers = Servers(tmp)
    results = {}
    try:
        for kind in kinds:
            results[kind] = bench_target(kind, bins, servers, a.runs, sides)
    finally:
        servers.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median
    ms = lambda xs: f"{med(xs) * 1000:.0f} ms"
    print(f"{a.runs} alternating runs per target, {os.cpu_count()} cores; "
          "ratio = hand median / keyd median (above 1: keyd is faster)\n")
    head = ["target", "keyctl rotate"] + (["through keyd"] if "keyd" in sides else []) + \
           ["by hand", "hand / keyctl"] + (["hand / through keyd"] if "keyd" in sides else []) + \
           ["fsync, rename, fsync of the directory"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for kind, r in results.items():
        row = [kind, ms(r["keyctl"])] + ([ms(r["keyd"])] if "keyd" in r else []) + [ms(r["hand"])]
        row.append(f"{med(r['hand']) / med(r['keyctl']):.2f}")
        if "keyd" in r:
            row.append(f"{med(r['hand']) / med(r['keyd']):.2f}")
        row.append(f"{med(r['fsync']) * 1000:.1f} ms")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
