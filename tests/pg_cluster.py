"""Real PostgreSQL servers and a real PgBouncer that a test owns, and so may stop and start.

`private_cluster()` runs initdb into a new temporary directory and starts that cluster on a
free port of 127.0.0.1 (its unix socket in the same directory, never the machine's); `pgbouncer()`
puts PgBouncer in front of one. Both run as the `postgres` OS user when the tests run as root
(PostgreSQL and PgBouncer both refuse to run as root), and both are stopped and their
directories removed on the way out, whatever happened. `missing_binaries()` says what is not
installed, so a test can skip with that reason.
"""

import asyncio
import datetime
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import asyncpg

SERVER_USER = "postgres"  # the OS user the servers run as, when the tests run as root


_ports_given: set[int] = set()


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now, and never one given before in this run:
    services started together each get their ports before any of them listens."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port


def _bin_dirs() -> list[str]:
    """PostgreSQL's own bin directories, newest major version first (Debian's layout), then PATH."""
    found = glob.glob("/usr/lib/postgresql/*/bin") + glob.glob("/usr/pgsql-*/bin")
    numbered = sorted(found, key=lambda path: [int(n) for n in re.findall(r"\d+", path)], reverse=True)
    return numbered + os.environ.get("PATH", "").split(os.pathsep)


def binary(name: str) -> str | None:
    for directory in _bin_dirs():
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        return None


def missing_binaries(*names: str) -> str | None:
    """Why these servers cannot run here, or None when they can."""
    missing = [name for name in names if binary(name) is None]
    if missing:
        return f"not installed: {', '.join(missing)}"
    if _server_user() is None:
        return f"running as root and there is no {SERVER_USER!r} OS user to run the servers as"
    return None


def _as_server_user() -> dict:
    """Popen keywords that run a command as the server user (nothing to change unless root)."""
    if os.geteuid() != 0:
        return {}
    user = _server_user()
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _run(command: list[str], cwd: Path, timeout: float = 60) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **_as_server_user())
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}")


def _private_directory(prefix: str) -> Path:
    """A new directory under /tmp that the server user owns (pytest's tmp_path is root's, mode 0700)."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    user = _server_user()
    os.chown(directory, user.pw_uid, user.pw_gid)
    return directory


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    path.write_text(text)
    path.chmod(mode)
    user = _server_user()
    os.chown(path, user.pw_uid, user.pw_gid)


def self_signed_certificate() -> tuple[str, str]:
    """(certificate PEM, private key PEM) for localhost and 127.0.0.1, valid for a day."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


class Cluster:
    """One initdb'd PostgreSQL cluster in a directory of its own, listening on 127.0.0.1:port."""

    def __init__(self, directory: Path, ssl: bool, password_auth: bool):
        self.directory = directory
        self.data = directory / "data"
        self.log_path = directory / "server.log"
        self.port = free_port()
        self.ssl = ssl
        self.password_auth = password_auth

    def init(self) -> None:
        _run(
            [binary("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-locale", "-E", "UTF8", "--no-sync"],
            self.directory,
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.directory}'",
            "max_connections": "200",  # the suite runs several services at once, each with its pool and listener
            "shared_buffers": "16MB",
            "fsync": "off",  # a throwaway cluster: durability across a crash of the machine is moot
            "log_connections": "on",
            "ssl": "on" if self.ssl else "off",
        }
        if self.ssl:
            certificate, key = self_signed_certificate()
            _write(self.data / "server.crt", certificate, 0o644)
            _write(self.data / "server.key", key, 0o600)
            settings.update(ssl_cert_file="'server.crt'", ssl_key_file="'server.key'")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# tests/pg_cluster.py\n" + "".join(f"{name} = {value}\n" for name, value in settings.items()))
        # Over TCP, a password (SCRAM, as on Neon) or trust; over this cluster's own socket, trust for the tests.
        method = "scram-sha-256" if self.password_auth else "trust"
        _write(self.data / "pg_hba.conf", f"local all all trust\nhost all all 127.0.0.1/32 {method}\n")

    def start(self) -> None:
        _run([binary("pg_ctl"), "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60", "start"], self.directory, 90)

    def stop(self, mode: str = "fast") -> None:
        _run([binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"], self.directory, 90)

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, database: str, user: str = "postgres", password: str | None = None, query: str = "") -> str:
        credentials = user if password is None else f"{user}:{password}"
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/{database}" + (f"?{query}" if query else "")

    def sql(self, statement: str, *args, database: str = "postgres") -> list:
        """Run one statement as the superuser over the cluster's unix socket; returns the rows."""

        async def query():
            connection = await asyncpg.connect(host=str(self.directory), port=self.port, user="postgres", database=database)
            try:
                return await connection.fetch(statement, *args)
            finally:
                await connection.close()

        return asyncio.run(query())

    def server_log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@contextmanager
def private_cluster(ssl: bool = False, password_auth: bool = False):
    """A started cluster of our own; stopped (immediately, if need be) and deleted afterwards."""
    cluster = Cluster(_private_directory("todo-pg-"), ssl, password_auth)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        try:
            if cluster.running():
                cluster.stop("immediate")
        except (RuntimeError, subprocess.TimeoutExpired):
            os.kill(int((cluster.data / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
        finally:
            shutil.rmtree(cluster.directory, ignore_errors=True)


class Bouncer:
    def __init__(self, directory: Path, port: int, process: subprocess.Popen):
        self.directory, self.port, self.process = directory, port, process

    def url(self, database: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text() if path.exists() else ""


@contextmanager
def pgbouncer(cluster: Cluster, database: str, pool_mode: str = "transaction", server_pool_size: int = 2):
    """PgBouncer on a free port in front of one database of `cluster`, as Neon's -pooler endpoints are.

    A server pool smaller than the service's own pool makes client connections share
    server connections, which is where prepared statements go wrong.
    """
    directory = _private_directory("todo-pgbouncer-")
    port = free_port()
    _write(directory / "userlist.txt", '"postgres" ""\n')
    _write(
        directory / "pgbouncer.ini",
        "[databases]\n"
        f"{database} = host=127.0.0.1 port={cluster.port} dbname={database} user=postgres\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {directory / 'userlist.txt'}\n"
        f"pool_mode = {pool_mode}\n"
        f"default_pool_size = {server_pool_size}\n"
        "max_client_conn = 200\n"
        f"logfile = {directory / 'pgbouncer.log'}\n"
        f"pidfile = {directory / 'pgbouncer.pid'}\n",
    )
    with open(directory / "stdout.log", "w") as output:
        process = subprocess.Popen(
            [binary("pgbouncer"), str(directory / "pgbouncer.ini")],
            cwd=directory,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            **_as_server_user(),
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited {process.returncode}:\n{(directory / 'stdout.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("pgbouncer did not listen within 30 s") from None
                time.sleep(0.05)
        yield Bouncer(directory, port, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # PgBouncer: immediate shutdown (the service is gone by now)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(directory, ignore_errors=True)
