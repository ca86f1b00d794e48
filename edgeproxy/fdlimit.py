"""The open-file limit a node needs, and raising the soft limit to it at start.

Each process of a node holds up to two descriptors per client connection (up to
``max_connections``: the socket, and a duplicate once the connection sends a stored body by
sendfile(2), to send its head with MSG_MORE), one per upstream connection
(``upstream.max_connections``), two per mapped stored body (the mapping's own and the open file
sendfile(2) reads; at most ``cache.store.MAX_MAPPED`` bodies stay mapped), plus some spare for
the store's files being written, bodies opened to be read, logs and listeners. Many systems
start services with a soft limit of 1024, which a busy edge passes. As nginx's
``worker_rlimit_nofile`` or systemd's ``LimitNOFILE``, the node raises its soft limit up to the
hard one at start (before workers are forked, which inherit it) and warns when even the hard
limit is lower than it may need.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

SPARE_FDS = 256  # files being written or read, logs, listeners
MAX_SOFT_LIMIT = 1 << 20  # never ask for more than this (the hard limit may be "unlimited")


def fds_needed(max_connections: int, upstream_connections: int, mapped_bodies: int) -> int:
    """Descriptors one process of a node may hold at once (see the module docstring)."""
    return 2 * max_connections + upstream_connections + 2 * mapped_bodies + SPARE_FDS


def raise_open_file_limit(needed: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE towards ``needed`` (at most to the hard limit); never
    lowers it. Returns the soft limit before and after; warns when after < ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    after = soft
    if soft != resource.RLIM_INFINITY and soft < needed:
        ceiling = MAX_SOFT_LIMIT if hard == resource.RLIM_INFINITY else hard
        # room beyond the estimate first, then just the estimate (some systems cap the soft
        # limit below an "unlimited" hard one); what stays short is reported below
        targets = {min(ceiling, max(needed, 65536)), min(ceiling, needed)}
        for target in sorted(targets, reverse=True):
            if target <= soft:
                break
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (ValueError, OSError):
                continue
            after = target
            break
    if after != resource.RLIM_INFINITY and after < needed:
        log.warning(
            "open-file limit %d (hard %s) is below the %d descriptors a process of this node "
            "may hold (2 per client connection, upstream connections, 2 per mapped body, "
            "%d spare): raise it (ulimit -n, LimitNOFILE=) or lower node.limits.max_connections",
            after,
            "unlimited" if hard == resource.RLIM_INFINITY else hard,
            needed,
            SPARE_FDS,
        )
    return soft, after
