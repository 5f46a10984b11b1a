"""A fake of AWS's own failures: an HTTP proxy in front of moto that injects faults.

moto answers every call it emulates successfully; real AWS throttles, has transient
outages and runs out of capacity. ``FaultProxy`` listens on a free 127.0.0.1 port,
forwards every request to the moto server and, when a rule matches, answers in AWS's
place with an HTTP status and AWS error XML (``Throttling``, ``ServiceUnavailable``,
``InsufficientInstanceCapacity``, ...) or a canned body (for calls moto does not
emulate). It is a fake, standing in for the one boundary nothing real can reach here.

Rules match the AWS Query ``Action`` and, optionally, a substring of any request
parameter's value (e.g. an Auto Scaling group name that contains a zone). A rule fires
``times`` times (``None``: until removed); rules are tried in the order they were added,
so "twice Throttling, then once 503" is two rules. ``forward_first`` sends the request on
to moto and then replaces its answer, as when a response is lost after AWS acted.

    with FaultProxy(moto_endpoint) as proxy:
        proxy.fail("SetDesiredCapacity", code="Throttling", times=2)
        ...  # point boto3 at proxy.url
        assert proxy.count("SetDesiredCapacity") == 3
"""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


@dataclass(frozen=True)
class Seen:
    """One request that reached the proxy and how it was answered."""

    action: str
    params: dict[str, str]
    status: int
    faulted: bool
    at: float = field(default_factory=time.time)
    """Wall time (``time.time()``) once answered: after moto acted, before the caller hears."""


@dataclass(eq=False)
class Fault:
    """One injection rule; ``hits`` counts the requests it answered."""

    action: str
    status: int = 400
    code: str = "Throttling"
    message: str = "Rate exceeded"
    times: int | None = 1
    """How many requests it answers; ``None`` until it is removed."""
    match: str | None = None
    """Only requests with a parameter value containing this substring."""
    body: str | None = None
    """A whole response body (XML) instead of the error document."""
    forward_first: bool = False
    """Let moto act on the request, then answer with the fault (a lost response)."""
    on_answer: Callable[[dict[str, str]], None] | None = None
    """Called with the request's parameters, in the proxy's thread, before it answers
    (a test's look at the world at that very moment)."""
    slow_by: float | None = None
    """Not a fault: forward the request this many seconds late and answer as moto does
    (a slow call, which a caller killed meanwhile never hears the end of)."""
    hits: int = field(default=0, init=False)

    def matches(self, action: str, params: list[tuple[str, str]]) -> bool:
        if self.action != action or (self.times is not None and self.hits >= self.times):
            return False
        return self.match is None or any(self.match in value for _, value in params)


def error_document(service: str, code: str, message: str) -> str:
    """The error XML AWS sends: EC2's ``Response/Errors`` or the Query ``ErrorResponse``."""
    request_id = str(uuid.uuid4())
    code, message = escape(code), escape(message)
    if service == "ec2":
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message>"
            f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
        )
    kind = "Receiver" if code in ("ServiceUnavailable", "InternalFailure") else "Sender"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ErrorResponse xmlns="https://autoscaling.amazonaws.com/doc/2011-01-01/">'
        f"<Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    )


def _service(authorization: str) -> str:
    """The signing service from a SigV4 ``Authorization`` header's credential scope."""
    for part in authorization.replace(",", " ").split():
        if part.startswith("Credential="):
            scope = part.removeprefix("Credential=").split("/")
            if len(scope) >= 4:
                return scope[3]
    return ""


class FaultProxy:
    """A threaded HTTP proxy to ``upstream`` (moto) that injects AWS faults by rule."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        if target.hostname is None or target.port is None:
            raise ValueError(f"upstream needs a host and port: {upstream}")
        self.upstream_host: str = target.hostname
        self.upstream_port: int = target.port
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._counts: Counter[str] = Counter()
        self.log: list[Seen] = []
        """Every request, in arrival order."""
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- rules -------------------------------------------------------------------------

    def fail(
        self,
        action: str,
        *,
        status: int = 400,
        code: str = "Throttling",
        message: str = "Rate exceeded",
        times: int | None = 1,
        match: str | None = None,
        forward_first: bool = False,
    ) -> Fault:
        """Answer ``action`` with an AWS error; returns the rule (see ``remove``)."""
        return self._add(
            Fault(action, status, code, message, times, match, forward_first=forward_first)
        )

    def respond(
        self,
        action: str,
        body: str,
        *,
        status: int = 200,
        times: int | None = None,
        match: str | None = None,
        on_answer: Callable[[dict[str, str]], None] | None = None,
    ) -> Fault:
        """Answer ``action`` with ``body`` (e.g. an API moto does not emulate)."""
        return self._add(
            Fault(action, status, "", "", times, match, body=body, on_answer=on_answer)
        )

    def slow(
        self, action: str, seconds: float, *, times: int | None = None, match: str | None = None
    ) -> Fault:
        """Forward ``action`` ``seconds`` late, answered as moto answers it."""
        return self._add(Fault(action, times=times, match=match, slow_by=seconds))

    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def count(self, action: str) -> int:
        """Requests seen for ``action`` (faulted ones included)."""
        with self._lock:
            return self._counts[action]

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self.log.clear()

    def _take(self, action: str, params: list[tuple[str, str]]) -> Fault | None:
        with self._lock:
            self._counts[action] += 1
            for fault in self._faults:
                if fault.matches(action, params):
                    fault.hits += 1
                    return fault
            return None

    def seen(self, action: str) -> list[Seen]:
        """The requests for ``action``, in arrival order."""
        with self._lock:
            return [entry for entry in self.log if entry.action == action]

    def _record(
        self, action: str, params: list[tuple[str, str]], status: int, faulted: bool
    ) -> None:
        with self._lock:
            self.log.append(Seen(action, dict(params), status, faulted))

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers

            def do_POST(self) -> None:
                try:
                    proxy._handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the caller was killed while its call was out (chaos tests)

            do_GET = do_POST  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = False
        server.block_on_close = True  # server_close() joins every request thread
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fault-proxy"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                raise RuntimeError("the fault proxy's thread did not stop")
        self._server = None
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    # -- forwarding --------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        query = urlsplit(request.path).query
        params = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        params += parse_qsl(query, keep_blank_values=True)
        action = dict(params).get("Action", "")
        target = request.headers.get("X-Amz-Target")
        if not action and target:
            action = target.rsplit(".", 1)[-1]
        fault = self._take(action, params)
        if fault is not None and fault.on_answer is not None:
            fault.on_answer(dict(params))
        if fault is not None and fault.slow_by is not None:
            time.sleep(fault.slow_by)
            fault = None  # then forwarded and answered as any other request
        if fault is not None and not fault.forward_first:
            self._record(action, params, fault.status, faulted=True)
            self._answer_fault(request, fault)
            return
        status, headers, answer = self._forward(request, body)
        if fault is not None:  # forward_first: moto acted, the caller never hears of it
            self._record(action, params, fault.status, faulted=True)
            self._answer_fault(request, fault)
            return
        self._record(action, params, status, faulted=False)
        request.send_response(status)
        for key, value in headers:
            if key.lower() not in HOP_BY_HOP:
                request.send_header(key, value)
        request.send_header("Content-Length", str(len(answer)))
        request.send_header("Connection", "close")
        request.end_headers()
        request.wfile.write(answer)

    def _forward(
        self, request: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
            connection.request(request.command, request.path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def _answer_fault(self, request: BaseHTTPRequestHandler, fault: Fault) -> None:
        if fault.body is not None:
            answer = fault.body.encode()
        else:
            service = _service(request.headers.get("Authorization", ""))
            answer = error_document(service, fault.code, fault.message).encode()
        request.send_response(fault.status)
        request.send_header("Content-Type", "text/xml")
        request.send_header("Content-Length", str(len(answer)))
        request.send_header("Connection", "close")
        request.end_headers()
        request.wfile.write(answer)
