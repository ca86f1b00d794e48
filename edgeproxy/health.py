"""Health of a node's parents: active checks against their ``/healthz`` and passive marks.

Contract:

* :class:`ParentHealth` is the pure state of one parent (``now`` is always passed in, from a
  monotonic clock). A parent is *available* when the active checks have not taken it out and
  no passive ejection is running.
* Active checks (only for parents with a ``health_url``): ``unhealthy_threshold`` consecutive
  failed checks take a parent out; ``healthy_threshold`` consecutive good ones put it back.
  A check is good when the URL answers 200 within ``timeout``. Parents start in (a node must
  serve at once after a restart; the first failed checks take a dead parent out).
* Passive marks (every parent): ``fail_threshold`` consecutive failed requests (connection
  error, timeout, 5xx answer) eject the parent for ``retry_time`` seconds. After that the
  parent is tried again; one more failure ejects it again at once (half-open), one success
  clears the count.
* :class:`HealthChecker` runs the active checks: one task, all parents checked concurrently
  every ``interval``, over its own small connection pool (so a busy request pool never delays
  a check into a false failure). It only reports outcomes to the :class:`ParentHealth` objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from edgeproxy.config import HealthConfig

log = logging.getLogger("edgeproxy.health")


@dataclass(slots=True)
class ParentHealth:
    """Health state of one parent. Pure: every method takes ``now`` when time matters."""

    name: str
    config: HealthConfig = field(default_factory=HealthConfig)
    active_up: bool = True
    active_successes: int = 0  # consecutive good active checks
    active_failures: int = 0  # consecutive failed active checks
    failures: int = 0  # consecutive failed requests (passive)
    out_until: float = 0.0  # end of the running passive ejection (monotonic seconds)
    last_error: str = ""

    def available(self, now: float) -> bool:
        """True when requests may go to this parent."""
        return self.active_up and now >= self.out_until

    def why_out(self, now: float) -> str | None:
        """Why the parent is out ("health check failed", "ejected after N failures") or None."""
        if not self.active_up:
            return "health check failed" + (f" ({self.last_error})" if self.last_error else "")
        if now < self.out_until:
            return f"ejected after {self.failures} failed requests" + (
                f" ({self.last_error})" if self.last_error else ""
            )
        return None

    def request_failed(self, now: float, error: str) -> bool:
        """Record a failed request; True when this failure took the parent out."""
        self.failures += 1
        self.last_error = error
        if self.failures >= self.config.fail_threshold and now >= self.out_until:
            self.out_until = now + self.config.retry_time
            return True
        return False

    def request_succeeded(self) -> None:
        """Record a good answer: clears the passive failure count."""
        self.failures = 0

    def check_result(self, ok: bool, error: str = "") -> bool | None:
        """Record one active check. Returns the new ``active_up`` when it changed, else None."""
        if ok:
            self.active_successes += 1
            self.active_failures = 0
            if not self.active_up and self.active_successes >= self.config.healthy_threshold:
                self.active_up = True
                return True
            return None
        self.active_failures += 1
        self.active_successes = 0
        self.last_error = error
        if self.active_up and self.active_failures >= self.config.unhealthy_threshold:
            self.active_up = False
            return False
        return None

    def snapshot(self, now: float) -> dict[str, object]:
        """A JSON-able view for stats and logs."""
        return {
            "available": self.available(now),
            "active_up": self.active_up,
            "consecutive_failures": self.failures,
            "ejected_for": round(max(0.0, self.out_until - now), 3),
            "last_error": self.last_error,
        }


@dataclass(frozen=True, slots=True)
class CheckTarget:
    """One parent to check actively: its health state and the URL of its health endpoint."""

    health: ParentHealth
    url: str


class HealthChecker:
    """Runs the active checks of ``targets`` every ``config.interval`` until :meth:`stop`."""

    def __init__(
        self,
        targets: Sequence[CheckTarget],
        config: HealthConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.targets = tuple(targets)
        self.config = config
        self.clock = clock
        self.checks_run = 0
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Start the checking task (no-op without targets)."""
        if not self.targets or self._task is not None:
            return
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(4, 2 * len(self.targets))),
            timeout=aiohttp.ClientTimeout(total=self.config.timeout),
        )
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check_once(self) -> None:
        """Check every target once, concurrently, and record the outcomes."""
        await asyncio.gather(*(self._check(target) for target in self.targets))
        self.checks_run += 1

    async def _run(self) -> None:
        while True:
            started = self.clock()
            await self.check_once()
            elapsed = self.clock() - started
            await asyncio.sleep(max(0.0, self.config.interval - elapsed))

    async def _check(self, target: CheckTarget) -> None:
        assert self._session is not None
        ok, error = False, ""
        try:
            async with self._session.get(target.url, allow_redirects=False) as response:
                await response.read()
                ok = response.status == 200
                error = "" if ok else f"{target.url} answered {response.status}"
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            error = f"{target.url} timed out"
        except (aiohttp.ClientError, OSError) as exc:
            error = f"{target.url}: {exc}"
        changed = target.health.check_result(ok, error)
        if changed is True:
            log.warning("parent %s is healthy again (%s)", target.health.name, target.url)
        elif changed is False:
            log.warning("parent %s is out: %s", target.health.name, error)
