"""``molt sandbox up|down``: a real control plane in a directory.

``up`` finds or builds the binaries, generates PKI, starts etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok on free loopback ports, waits until each
is healthy, writes ``DIR/kubeconfig`` and installs Molt's CRDs. ``down`` stops exactly the
processes ``up`` recorded and leaves every file in place, so the next ``up`` reuses the
certificates and etcd's data.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import yaml

from molt.api.crd import GROUP, RESOURCES, committed_crds
from molt.api.labels import KWOK_NODE_ANNOTATION
from molt.sandbox import pki as pki_module
from molt.sandbox.binaries import Binaries, ensure_binaries
from molt.sandbox.processes import (
    ProcessFailedError,
    Running,
    check_alive,
    is_alive,
    log_tail,
    start,
    stop,
)

Report = Callable[[str], None]
STATE_FILE = "sandbox.json"

SERVICE_CIDR = "10.0.0.0/24"


class SandboxError(RuntimeError):
    """The sandbox cannot start or stop; the message says what to do."""


@dataclass
class Ports:
    """Loopback ports of one sandbox."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports(previous: dict[str, int] | None) -> Ports:
    # Reuse the last ports when free: etcd remembers its peer URL in its data directory.
    if previous and all(_port_free(p) for p in previous.values()):
        return Ports(**previous)
    return Ports(*(_free_port() for _ in range(6)))


class Sandbox:
    """A control plane rooted at one directory."""

    def __init__(self, directory: Path, *, apiserver_flags: tuple[str, ...] = ()) -> None:
        """``apiserver_flags`` are added to kube-apiserver's (e.g. ``--watch-cache=false``,
        so a watch from a compacted revision really expires)."""
        self.directory = directory.resolve()
        self.apiserver_flags = apiserver_flags
        self.state_path = self.directory / STATE_FILE
        self.kubeconfig = self.directory / "kubeconfig"
        self.log_dir = self.directory / "logs"

    # -- state ------------------------------------------------------------------------

    def _load_state(self) -> dict[str, object]:
        if not self.state_path.is_file():
            return {}
        loaded: dict[str, object] = json.loads(self.state_path.read_text())
        return loaded

    def _save_state(
        self, ports: Ports, processes: list[Running], argv: dict[str, list[str]] | None = None
    ) -> None:
        previous = self._load_state().get("argv")
        state = {
            "ports": asdict(ports),
            "processes": [
                {"name": p.name, "pid": p.pid, "binary": p.binary, "log": str(p.log)}
                for p in processes
            ],
            "argv": argv if argv is not None else (previous or {}),
        }
        self.state_path.write_text(json.dumps(state, indent=2))

    def recorded_processes(self) -> list[Running]:
        raw = self._load_state().get("processes", [])
        assert isinstance(raw, list)
        return [
            Running(name=p["name"], pid=p["pid"], binary=p["binary"], log=Path(p["log"]))
            for p in raw
        ]

    def running(self) -> list[Running]:
        return [p for p in self.recorded_processes() if is_alive(p)]

    # -- up ---------------------------------------------------------------------------

    def up(self, report: Report = print, binaries: Binaries | None = None) -> None:
        """Start the control plane; refuse if this directory's sandbox already runs."""
        self.directory.mkdir(parents=True, exist_ok=True)
        alive = self.running()
        if alive:
            names = ", ".join(p.name for p in alive)
            raise SandboxError(
                f"a sandbox is already running in {self.directory} ({names}); "
                f"use it with KUBECONFIG={self.kubeconfig}, or stop it first with "
                f"`molt sandbox down --dir {self.directory}`"
            )
        binaries = binaries or ensure_binaries(report)
        previous = self._load_state().get("ports")
        ports = _pick_ports(previous if isinstance(previous, dict) else None)
        certs = pki_module.generate(self.directory / "pki")
        self._write_kubeconfig(certs, ports)
        started: list[Running] = []
        try:
            self._start_all(binaries, certs, ports, started, report)
            self._install_crds(binaries, report)
        except BaseException:
            stop(started)
            self._save_state(ports, [])
            raise
        report(f"Sandbox ready: {self.kubeconfig}")

    def _start_all(
        self,
        binaries: Binaries,
        certs: pki_module.Pki,
        ports: Ports,
        started: list[Running],
        report: Report,
    ) -> None:
        t0 = time.monotonic()

        argvs: dict[str, list[str]] = {}

        def launch(name: str, argv: list[str]) -> None:
            started.append(start(name, argv, self.log_dir))
            argvs[name] = argv
            self._save_state(ports, started, argvs)

        etcd_url = f"http://127.0.0.1:{ports.etcd_client}"
        peer_url = f"http://127.0.0.1:{ports.etcd_peer}"
        launch(
            "etcd",
            [
                str(binaries.etcd),
                "--name=sandbox",
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=sandbox={peer_url}",
                # A throwaway cluster: skipping fsync makes it several times faster.
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=4294967296",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", started, lambda: _http_ok(f"{etcd_url}/health"), 30)
        report(f"  etcd healthy ({time.monotonic() - t0:.1f}s)")

        launch(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports.apiserver}",
                f"--tls-cert-file={certs.server_cert}",
                f"--tls-private-key-file={certs.server_key}",
                f"--client-ca-file={certs.ca_cert}",
                f"--service-account-key-file={certs.service_account_pub}",
                f"--service-account-signing-key-file={certs.service_account_key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                *self.apiserver_flags,
            ],
        )
        ssl_ctx = self._client_ssl(certs)
        api = f"https://127.0.0.1:{ports.apiserver}"
        self._wait("kube-apiserver", started, lambda: _http_ok(f"{api}/readyz", ssl_ctx), 90)
        report(f"  kube-apiserver ready ({time.monotonic() - t0:.1f}s)")

        kubeconfig = str(self.kubeconfig)
        launch(
            "kube-controller-manager",
            [
                str(binaries.kube_controller_manager),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports.controller_manager}",
                f"--root-ca-file={certs.ca_cert}",
                f"--service-account-private-key-file={certs.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*",
                "--leader-elect=false",
                "--node-monitor-grace-period=40s",
            ],
        )
        launch(
            "kube-scheduler",
            [
                str(binaries.kube_scheduler),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports.scheduler}",
                "--leader-elect=false",
            ],
        )
        kwok_config = self.directory / "kwok.yaml"
        kwok_config.write_text((resources.files("molt.sandbox") / "kwok.yaml").read_text())
        launch(
            "kwok",
            [
                str(binaries.kwok),
                f"--kubeconfig={kubeconfig}",
                f"--config={kwok_config}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                "--node-lease-duration-seconds=40",
                "--cidr=10.244.0.1/16",
                "--node-ip=10.200.0.1",
                f"--server-address=127.0.0.1:{ports.kwok}",
            ],
        )
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        self._wait(
            "kube-controller-manager",
            started,
            lambda: _http_ok(f"https://127.0.0.1:{ports.controller_manager}/healthz", insecure),
            60,
        )
        self._wait(
            "kube-scheduler",
            started,
            lambda: _http_ok(f"https://127.0.0.1:{ports.scheduler}/healthz", insecure),
            60,
        )
        self._wait("kwok", started, lambda: _http_ok(f"http://127.0.0.1:{ports.kwok}/healthz"), 60)
        # The ServiceAccount controller creating "default" shows the controllers really run.
        self._wait(
            "kube-controller-manager",
            started,
            lambda: _http_ok(f"{api}/api/v1/namespaces/default/serviceaccounts/default", ssl_ctx),
            60,
        )
        report(f"  controller-manager, scheduler and kwok ready ({time.monotonic() - t0:.1f}s)")

    def _wait(
        self, what: str, started: list[Running], probe: Callable[[], bool], timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            check_alive(started)
            if probe():
                return
            time.sleep(0.2)
        check_alive(started)
        process = next((p for p in started if p.name == what), None)
        detail = f"; last lines of {process.log}:\n{log_tail(process.log)}" if process else ""
        raise SandboxError(f"{what} did not become healthy within {timeout:.0f}s{detail}")

    def _client_ssl(self, certs: pki_module.Pki) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
        ctx.load_cert_chain(str(certs.admin_cert), str(certs.admin_key))
        return ctx

    def _write_kubeconfig(self, certs: pki_module.Pki, ports: Ports) -> None:
        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "molt-sandbox",
                    "cluster": {
                        "server": f"https://127.0.0.1:{ports.apiserver}",
                        "certificate-authority-data": b64(certs.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "molt-sandbox-admin",
                    "user": {
                        "client-certificate-data": b64(certs.admin_cert),
                        "client-key-data": b64(certs.admin_key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "molt-sandbox",
                    "context": {"cluster": "molt-sandbox", "user": "molt-sandbox-admin"},
                }
            ],
            "current-context": "molt-sandbox",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    def _install_crds(self, binaries: Binaries, report: Report) -> None:
        with tempfile.TemporaryDirectory(prefix="molt-crds-") as tmp:
            for index, text in enumerate(committed_crds()):
                (Path(tmp) / f"{index}.yaml").write_text(text)
            kubectl = [str(binaries.kubectl), f"--kubeconfig={self.kubeconfig}"]
            _run([*kubectl, "apply", "--server-side", "-f", tmp])
            names = [f"crd/{r.names.plural}.{GROUP}" for r in RESOURCES]
            _run([*kubectl, "wait", "--for=condition=Established", "--timeout=60s", *names])
        report("  Molt CRDs installed (instancegroups, terminationpolicies, watchdogs, reapers)")

    # -- down -------------------------------------------------------------------------

    def restart(self, component: str, report: Report = print, down_for: float = 0.0) -> None:
        """Stop one component and start it again with the same flags, ``down_for`` seconds
        later (for fault tests: a restarted kwok forgets the nodes it no longer selects;
        one down longer than the node-monitor grace period lets every node go NotReady)."""
        state = self._load_state()
        argvs = state.get("argv") or {}
        assert isinstance(argvs, dict)
        argv = argvs.get(component)
        if argv is None:
            raise SandboxError(f"no component {component!r} in {self.directory}")
        processes = self.recorded_processes()
        stop([p for p in processes if p.name == component])
        if down_for > 0:
            time.sleep(down_for)
        fresh = start(component, list(argv), self.log_dir)
        kept = [p if p.name != component else fresh for p in processes]
        ports = state.get("ports")
        assert isinstance(ports, dict)
        self._save_state(Ports(**ports), kept)
        self._wait_ready(component, kept)
        report(f"Restarted {component}")

    def stop(self, component: str, report: Report = print) -> None:
        """Stop one component and leave it stopped (for fault tests: no kube-scheduler,
        no pod is scheduled); :meth:`start` brings it back with the same flags."""
        argvs = self._load_state().get("argv") or {}
        assert isinstance(argvs, dict)
        if component not in argvs:
            raise SandboxError(f"no component {component!r} in {self.directory}")
        processes = self.recorded_processes()
        stop([p for p in processes if p.name == component])
        self._save_state(self._ports(), [p for p in processes if p.name != component])
        report(f"Stopped {component}")

    def start(self, component: str, report: Report = print) -> None:
        """Start a component :meth:`stop` stopped, with the flags ``up`` gave it; nothing
        when it is running already."""
        argvs = self._load_state().get("argv") or {}
        assert isinstance(argvs, dict)
        argv = argvs.get(component)
        if argv is None:
            raise SandboxError(f"no component {component!r} in {self.directory}")
        processes = self.recorded_processes()
        if any(p.name == component for p in processes):
            return
        fresh = start(component, list(argv), self.log_dir)
        self._save_state(self._ports(), [*processes, fresh])
        self._wait_ready(component, [*processes, fresh])
        report(f"Started {component}")

    def _wait_ready(self, component: str, running: list[Running]) -> None:
        """Return once a restarted etcd, kube-apiserver or kwok answers its health check
        (the others report through the API server, which is up)."""
        ports = self._ports()
        if component == "kwok":
            url = f"http://127.0.0.1:{ports.kwok}/healthz"
            self._wait("kwok", running, lambda: _http_ok(url), 60)
        elif component == "etcd":
            url = f"{self.etcd_url}/health"
            self._wait("etcd", running, lambda: _http_ok(url), 30)
            self._wait_ready("kube-apiserver", running)  # it reconnects to etcd
        elif component == "kube-apiserver":
            ctx = self._client_ssl(pki_module.Pki(self.directory / "pki"))
            url = f"https://127.0.0.1:{ports.apiserver}/readyz"
            self._wait("kube-apiserver", running, lambda: _http_ok(url, ctx), 90)

    @property
    def etcd_url(self) -> str:
        """The sandbox etcd's client URL (plain HTTP on loopback; it serves the JSON
        gateway too)."""
        return f"http://127.0.0.1:{self._ports().etcd_client}"

    def _ports(self) -> Ports:
        ports = self._load_state().get("ports")
        assert isinstance(ports, dict)
        return Ports(**ports)

    def down(self, report: Report = print) -> list[str]:
        """Stop every process ``up`` started here; files stay."""
        processes = self.recorded_processes()
        stopped = stop(processes)
        state = self._load_state()
        if state:
            state["processes"] = []
            self.state_path.write_text(json.dumps(state, indent=2))
        if stopped:
            report(f"Stopped {', '.join(stopped)} ({self.directory})")
        else:
            report(f"Nothing was running in {self.directory}")
        return stopped


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SandboxError(f"{' '.join(argv[:3])} ... failed:\n{result.stderr.strip()}")


__all__ = ["ProcessFailedError", "Sandbox", "SandboxError"]
