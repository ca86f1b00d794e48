"""Eviction policy: decides which keys leave the store; never touches files (the store does).

Contract: the store reports ``insert(key, size, now)``, ``touch(key, now)`` and ``remove(key)``;
``victims(bytes_over, now)`` yields keys to evict, least valuable first, until at least
``bytes_over`` bytes would be freed. ``admit(size, budget)`` says whether an object may enter at
all (an object larger than ``max_object_share`` of the budget passes through instead).

This is plain LRU, the baseline the popularity-aware policy (issue 7) replaces behind the same
interface.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator


class LruPolicy:
    """Least recently used, size-aware only through the byte accounting."""

    __slots__ = ("_order", "max_object_share")

    def __init__(self, max_object_share: float = 0.5) -> None:
        self._order: OrderedDict[str, int] = OrderedDict()
        self.max_object_share = max_object_share

    def __len__(self) -> int:
        return len(self._order)

    def admit(self, size: int, budget: int) -> bool:
        return size <= budget * self.max_object_share

    def insert(self, key: str, size: int, now: float) -> None:
        self._order[key] = size
        self._order.move_to_end(key)

    def touch(self, key: str, now: float) -> None:
        if key in self._order:
            self._order.move_to_end(key)

    def remove(self, key: str) -> None:
        self._order.pop(key, None)

    def victims(self, bytes_over: int, now: float) -> Iterator[str]:
        """Oldest first, until ``bytes_over`` bytes are accounted for. Does not remove them."""
        freed = 0
        for key, size in self._order.items():
            if freed >= bytes_over:
                return
            freed += size
            yield key
