"""The open-file limit a node needs, and raising the soft limit to it at start.

Each process of a node holds a descriptor per client connection (up to ``max_connections``),
two per mapped stored body (the mapping's own and the open file sendfile(2) reads; at most
``cache.store.MAX_MAPPED`` bodies stay mapped), plus a few hundred for upstream connections,
the store's files being written and logs. Many systems start services with a soft limit of
1024, which a busy edge passes. As nginx's ``worker_rlimit_nofile`` or systemd's
``LimitNOFILE``, the node raises its soft limit up to the hard one at start (before workers
are forked, which inherit it) and warns when even the hard limit is lower than it may need.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

SPARE_FDS = 256  # upstream connections, files being written, logs, the admin listener
MAX_SOFT_LIMIT = 1 << 20  # never ask for more than this (the hard limit may be "unlimited")


def fds_needed(max_connections: int, mapped_bodies: int) -> int:
    """Descriptors one process of a node may hold at once (see the module docstring)."""
    return max_connections + 2 * mapped_bodies + SPARE_FDS


def raise_open_file_limit(needed: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE towards ``needed`` (at most to the hard limit); never
    lowers it. Returns the soft limit before and after; warns when after < ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    after = soft
    if soft != resource.RLIM_INFINITY and soft < needed:
        ceiling = MAX_SOFT_LIMIT if hard == resource.RLIM_INFINITY else hard
        target = min(ceiling, max(needed, 65536))  # room to grow, as nginx's packages set
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                after = target
            except (ValueError, OSError) as exc:
                log.warning("cannot raise the open-file limit from %d: %s", soft, exc)
    if after != resource.RLIM_INFINITY and after < needed:
        log.warning(
            "open-file limit %d (hard %s) is below the %d descriptors a process of this node "
            "may hold (max_connections, 2 per mapped body, %d spare): raise it "
            "(ulimit -n, LimitNOFILE=) or lower node.limits.max_connections",
            after,
            "unlimited" if hard == resource.RLIM_INFINITY else hard,
            needed,
            SPARE_FDS,
        )
    return soft, after
