"""A thread-safe least-recently-used cache bounded by bytes (and optionally by entry count).

The lip-sync side keeps per-avatar data this way: the engines' per-frame plans and the avatars' face
data. Building a value is left to the caller, outside the cache's lock, so a slow build never blocks
the hits of other threads; two threads racing on one key only build it twice.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable


class BoundedCache[K, V]:
    """key → value, least recently used out first once over ``max_bytes`` or ``max_entries``.

    Each entry's size is taken when it is put: given explicitly, or measured by ``sizer``. ``hits`` and
    ``misses`` count the lookups of ``get`` since the cache was made.
    """

    def __init__(self, max_bytes: int, sizer: Callable[[V], int] | None = None, *,
                 max_entries: int | None = None) -> None:
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be >= 1 or None, got {max_entries}")
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._sizer = sizer
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        """The cached value, now the most recently used, or None."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found[0]

    def peek(self, key: K) -> V | None:
        """The cached value or None, leaving the order and the counters alone."""
        with self._lock:
            found = self._entries.get(key)
            return None if found is None else found[0]

    def put(self, key: K, value: V, size: int | None = None) -> None:
        """Cache ``value`` as the most recently used (replacing any under ``key``), then evict the oldest."""
        if size is None:
            if self._sizer is None:
                raise ValueError("put needs a size when the cache has no sizer")
            size = self._sizer(value)
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._bytes -= previous[1]
            self._entries[key] = (value, size)
            self._bytes += size
            self._evict_over_budget()

    def pop(self, key: K) -> V | None:
        """Remove ``key``; its value, or None if it was not cached."""
        with self._lock:
            found = self._entries.pop(key, None)
            if found is None:
                return None
            self._bytes -= found[1]
            return found[0]

    def values(self) -> list[V]:
        """A snapshot of the cached values, least recently used first."""
        with self._lock:
            return [value for value, _ in self._entries.values()]

    @property
    def nbytes(self) -> int:
        """The sum of the cached entries' sizes, as taken when they were put."""
        with self._lock:
            return self._bytes

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _evict_over_budget(self) -> None:
        # The newest entry always stays, even alone over budget: its caller needs it now, and evicting it
        # would make every use of it build it again.
        while len(self._entries) > 1 and self._over_budget():
            _, (_, size) = self._entries.popitem(last=False)
            self._bytes -= size

    def _over_budget(self) -> bool:
        too_many = self.max_entries is not None and len(self._entries) > self.max_entries
        return too_many or self._bytes > self.max_bytes
