"""The control-plane health gate's I/O: the API server's ``/readyz`` and the policy's URLs.

Each check is bounded by a short timeout, so a hung endpoint counts as a failure rather
than stalling selection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp

from molt.kube.transport import ApiError, RawApi

CHECK_TIMEOUT_SECONDS = 3.0


class KubeHealthProbe:
    """Asks the API server through the raw transport, and each URL over plain HTTP(S)."""

    def __init__(self, raw: RawApi, timeout: float = CHECK_TIMEOUT_SECONDS) -> None:
        self.raw = raw
        self.timeout = timeout

    async def failures(self, urls: Sequence[str]) -> list[str]:
        failed: list[str] = []
        try:
            await asyncio.wait_for(
                self.raw.request("get", "GET", "/readyz", request_timeout=self.timeout),
                self.timeout + 1,
            )
        except ApiError as error:
            failed.append(f"API server /readyz answered {error.status}")
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            failed.append(f"API server /readyz unreachable ({type(error).__name__})")
        if urls:
            results = await asyncio.gather(*(self._check(url) for url in urls))
            failed.extend(r for r in results if r is not None)
        return failed

    async def _check(self, url: str) -> str | None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url, allow_redirects=False) as response,
            ):
                if 200 <= response.status <= 299:
                    return None
                return f"{url} answered {response.status}"
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            return f"{url} unreachable ({type(error).__name__})"
