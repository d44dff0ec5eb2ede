"""A private mosquitto for tests, benchmarks and demos (Debian package ``mosquitto``).

:class:`Mosquitto` writes a config into its own directory, starts ``mosquitto -c`` on
127.0.0.1 and a free port, waits until the port accepts connections, and can stop (SIGTERM:
mosquitto saves its persistence file), kill (SIGKILL) and restart it on the same port. It never
touches the system service or port 1883.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["MOSQUITTO", "Mosquitto", "MosquittoMissing", "free_port", "make_test_ca"]


def _find(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin") if (p := Path(d) / name).exists()), None
    )


MOSQUITTO = _find("mosquitto")


class MosquittoMissing(RuntimeError):
    """mosquitto is not installed (Debian: apt-get install mosquitto mosquitto-clients)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """One mosquitto process with a generated config.

    ``users`` maps user names to passwords (a password file is generated and anonymous access
    is refused); ``acl`` is the text of an ACL file; ``tls`` is ``(ca, cert, key)`` paths for a
    TLS listener (``port`` is then TLS); ``persistence`` keeps sessions and queued messages
    across stop/start (mosquitto writes them on SIGTERM and every ``autosave`` seconds).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        tls: tuple[Path, Path, Path] | None = None,
        require_certificate: bool = False,
        persistence: bool = True,
        autosave: int = 1,
        extra: str = "",
        port: int | None = None,
    ) -> None:
        if MOSQUITTO is None:
            raise MosquittoMissing(
                "mosquitto is not installed: apt-get install mosquitto mosquitto-clients"
            )
        self.exe = MOSQUITTO
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [
            f"listener {self.port} 127.0.0.1",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            f"log_dest file {self.dir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # run as root, mosquitto would switch to the user "mosquitto", which cannot write
            # into this directory
            lines.append("user root")
        if persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.dir}/",
                f"autosave_interval {autosave}",
            ]
        if users:
            pwfile = self.dir / "passwd"
            pwfile.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
            pwfile.chmod(0o600)
            subprocess.run(
                [_find("mosquitto_passwd") or "mosquitto_passwd", "-U", str(pwfile)],
                check=True,
                capture_output=True,
            )
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        if acl is not None:
            aclfile = self.dir / "acl"
            aclfile.write_text(acl)
            lines.append(f"acl_file {aclfile}")
        if tls is not None:
            ca, cert, key = tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
            if require_certificate:
                lines.append("require_certificate true")
        if extra:
            lines.append(extra)
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited ({self.proc.returncode}): {err}{self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log()}")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        if proc.stderr:
            proc.stderr.close()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        path = self.dir / "mosquitto.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def make_test_ca(directory: Path, host: str = "127.0.0.1") -> dict[str, Path]:
    """A throw-away CA, a server certificate for ``host`` (IP SAN) and a client certificate,
    made with the ``openssl`` command. Returns the paths by name (ca, server_cert,
    server_key, client_cert, client_key)."""
    directory.mkdir(parents=True, exist_ok=True)
    d = directory
    openssl = _find("openssl") or "openssl"

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=les02 test CA",
        "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    (d / "server.ext").write_text(f"subjectAltName=IP:{host}\n")
    for name, ext in (("server", True), ("client", False)):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
        args = ["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", f"{name}.pem"]  # fmt: skip
        if ext:
            args += ["-extfile", "server.ext"]
        run(*args)
    return {
        "ca": d / "ca.pem",
        "server_cert": d / "server.pem",
        "server_key": d / "server.key",
        "client_cert": d / "client.pem",
        "client_key": d / "client.key",
    }
