"""sushy-tools' Redfish emulator on loopback, with its fake systems driver, for tests.

The emulator is a real Redfish server (sushy-tools' ``sushy-emulator``: the Redfish
service OpenStack tests its BMC drivers against); its fake driver keeps each system's
power state (changes apply 1-11 s after they are asked for, like a real BMC), boot
override and virtual media in memory instead of driving libvirt. It asks for HTTP basic
authentication with the credentials given here, and downloads an image when it is
inserted, so the harness also serves the images (``ImageServer``), which takes the
emulator's change notifications (``PUT /notify``) too: every change of a system's state,
requested power changes included, in order.

    with ImageServer(tmp) as images, RedfishEmulator(tmp, systems, images.notify_url) as bmc:
        bmc.url  # http://127.0.0.1:<port>
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import bcrypt
import requests

USERNAME = "molt"
PASSWORD = "bmc-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class FakeSystem:
    """One emulated machine: its host name, Redfish system id and boot NIC."""

    name: str
    mac: str
    ip: str
    system_id: str = field(default_factory=lambda: str(uuid.uuid4()))


class ImageServer:
    """Serves ``/<name>.iso`` (a few bytes each) and records the emulator's notifications."""

    def __init__(self, images: tuple[str, ...] = ("os.iso", "wipe.iso")) -> None:
        self.images = images
        self.notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def notify_url(self) -> str:
        return f"{self.url}/notify"

    def image_url(self, name: str) -> str:
        return f"{self.url}/{name}"

    def seen(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.notifications)

    def __enter__(self) -> ImageServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                if name not in owner.images:
                    self.send_error(404)
                    return
                body = f"image {name}\n".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = json.loads(self.rfile.read(length) or b"{}")
                with owner._lock:
                    owner.notifications.append(data)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class BlackHole:
    """A loopback port that accepts connections and never answers: a hung BMC."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)  # connections queue in the backlog, nothing reads them

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def close(self) -> None:
        self._socket.close()


class RedfishEmulator:
    """``sushy-emulator --config`` with the fake driver, on a free loopback port."""

    def __init__(self, workdir: Path, systems: list[FakeSystem], notify_url: str) -> None:
        self.workdir = workdir
        self.systems = systems
        self.notify_url = notify_url
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "sushy-emulator.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        state = self.workdir / "emulator-state"
        state.mkdir(exist_ok=True)
        auth = self.workdir / "htpasswd"
        digest = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        auth.write_text(f"{USERNAME}:{digest}\n")
        systems = [
            {
                "uuid": s.system_id,
                "name": s.name,
                "power_state": "Off",
                "external_notifier": True,
                "nics": [{"mac": s.mac, "ip": s.ip}],
            }
            for s in self.systems
        ]
        config = self.workdir / "emulator.conf"
        config.write_text(
            "SUSHY_EMULATOR_FAKE_DRIVER = True\n"
            f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}\n"
            f"SUSHY_EMULATOR_AUTH_FILE = {str(auth)!r}\n"
            f"SUSHY_EMULATOR_STATE_DIR = {str(state)!r}\n"
            f"EXTERNAL_NOTIFICATION_URL = {self.notify_url!r}\n"
        )
        return config

    def __enter__(self) -> RedfishEmulator:
        config = self._write_config()
        binary = Path(sys.executable).parent / "sushy-emulator"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(binary), "--config", str(config), "-i", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sushy-emulator exited: {self.log_path.read_text()[-2000:]}")
            try:
                found = requests.get(
                    f"{self.url}/redfish/v1/Systems", auth=(USERNAME, PASSWORD), timeout=2
                )
                if found.status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("sushy-emulator did not start within 30s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
