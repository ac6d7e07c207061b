"""A private PostgreSQL cluster for tests and the bench: initdb and pg_ctl in a temporary
directory, reached only through a unix socket in that directory (no TCP port).

PostgreSQL refuses to run as root: when we are root, the cluster's directory is given to
the `postgres` user (the Debian package creates it) and the server runs as that user.
Clients connect as the cluster's superuser `lumen` with trust authentication, which the
socket's directory (mode 0700 to everyone else) keeps private.

    with PgServer() as pg:
        url = pg.create_db("lumen")     # postgresql://lumen@/lumen?host=/tmp/lumen-pg-…
"""

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

SUPERUSER = "lumen"


class Unavailable(Exception):
    """No PostgreSQL server binaries on this machine (Debian: apt-get install postgresql)."""


def bindir():
    """The directory holding initdb and pg_ctl: on PATH, else Debian's newest version."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if not versions:
        raise Unavailable("no PostgreSQL server (initdb, pg_ctl): apt-get install postgresql")
    return Path(versions[-1]).parent


class PgServer:
    def __init__(self, settings=None, timeout=60):
        self.bin = bindir()
        self.settings = {
            "listen_addresses": "''",
            "fsync": "on",
            "max_connections": "100",
            "shared_buffers": "128MB",
            **(settings or {}),
        }
        self.timeout = timeout
        self.dir = None
        self.user = None

    def _run(self, *args, check=True):
        r = subprocess.run(
            [str(self.bin / args[0]), *map(str, args[1:])],
            user=self.user,
            capture_output=True,
            text=True,
            timeout=self.timeout,
        )
        if check and r.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({r.returncode}): {(r.stderr or r.stdout)[-800:]}"
            )
        return r

    def _pg_ctl_start(self):
        opts = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        opts += f" -c unix_socket_directories={self.dir}"
        self._run(
            "pg_ctl", "-D", self.dir / "data", "-l", self.dir / "server.log", "-o", opts,
            "-w", "-t", int(self.timeout), "start",
        )  # fmt: skip

    def pause(self):
        """Stop the server (fast shutdown: clients are cut off), keeping its data."""
        self._run("pg_ctl", "-D", self.dir / "data", "-m", "fast", "-w", "stop")

    def resume(self):
        self._pg_ctl_start()

    def start(self):
        # Outside any pytest tmp_path: those are private to root, and the server may be
        # another user. The socket path must stay short (108 bytes).
        self.dir = Path(tempfile.mkdtemp(prefix="lumen-pg-"))
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")  # KeyError: no postgres user (Debian's package makes it)
            self.user = "postgres"
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        data = self.dir / "data"
        self._run("initdb", "-D", data, "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-locale")
        opts = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        opts += f" -c unix_socket_directories={self.dir}"
        self._run(
            "pg_ctl",
            "-D",
            data,
            "-l",
            self.dir / "server.log",
            "-o",
            opts,
            "-w",
            "-t",
            int(self.timeout),
            "start",
        )
        return self

    def url(self, dbname="postgres"):
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.dir}"

    def create_db(self, name):
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self):
        try:
            return (self.dir / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.dir is None:
            return
        try:
            self._run(
                "pg_ctl", "-D", self.dir / "data", "-m", "immediate", "-w", "stop", check=False
            )
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()


def wait_ready(url, timeout=30):
    """Until a connection to `url` succeeds (psycopg.OperationalError after `timeout`)."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=5).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
