"""Behaviour of the byte-bounded LRU cache behind the lip-sync plan caches and the avatar cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from infra.bounded_cache import BoundedCache


class YieldingKey:
    """A key whose hashing lets other threads run: the cache hashes inside its critical sections, so
    without its lock another thread's put or pop would land in the middle of them."""

    def __init__(self, name: int) -> None:
        self.name = name

    def __hash__(self) -> int:
        time.sleep(0)  # releases the GIL
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, YieldingKey) and other.name == self.name


def run_in_threads(count: int, work: Callable[[int], None]) -> None:
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def worker(number: int) -> None:
        start.wait()
        try:
            work(number)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def test_a_lookup_of_a_missing_key_is_none_and_counts_a_miss() -> None:
    cache: BoundedCache[str, str] = BoundedCache(100)
    assert cache.get("a") is None
    assert (cache.hits, cache.misses, len(cache), cache.nbytes) == (0, 1, 0, 0)


def test_a_put_value_is_found_again_and_counts_a_hit() -> None:
    cache: BoundedCache[str, str] = BoundedCache(100)
    value = "face data"
    cache.put("a", value, size=10)
    assert cache.get("a") is value
    assert "a" in cache and "b" not in cache
    assert (cache.hits, cache.misses, len(cache), cache.nbytes) == (1, 0, 1, 10)


def test_the_least_recently_put_entry_goes_first_when_over_the_byte_budget() -> None:
    cache: BoundedCache[str, int] = BoundedCache(30)
    for key in ("a", "b", "c", "d"):
        cache.put(key, 0, size=10)
    assert ("a" in cache, "b" in cache, "c" in cache, "d" in cache) == (False, True, True, True)
    assert cache.nbytes == 30


def test_a_lookup_makes_an_entry_the_most_recently_used() -> None:
    cache: BoundedCache[str, str] = BoundedCache(30)
    for key in ("a", "b", "c"):
        cache.put(key, key, size=10)
    cache.get("a")  # now "b" is the oldest
    cache.put("d", "d", size=10)
    assert cache.values() == ["c", "a", "d"]


def test_a_peek_neither_refreshes_an_entry_nor_counts() -> None:
    cache: BoundedCache[str, str] = BoundedCache(30)
    for key in ("a", "b", "c"):
        cache.put(key, key, size=10)
    assert cache.peek("a") == "a" and cache.peek("z") is None
    cache.put("d", "d", size=10)
    assert cache.values() == ["b", "c", "d"] and (cache.hits, cache.misses) == (0, 0)


def test_as_many_oldest_entries_go_as_the_newest_needs_room_for() -> None:
    cache: BoundedCache[str, str] = BoundedCache(100)
    for key in ("a", "b", "c", "d"):
        cache.put(key, key, size=25)
    cache.put("big", "big", size=60)
    assert cache.values() == ["d", "big"]
    assert cache.nbytes == 85


def test_the_newest_entry_stays_even_alone_over_the_budget() -> None:
    cache: BoundedCache[str, str] = BoundedCache(10)
    cache.put("small", "small", size=5)
    cache.put("huge", "huge", size=1000)
    assert cache.values() == ["huge"]
    assert cache.get("huge") == "huge" and cache.nbytes == 1000
    cache.put("next", "next", size=1000)
    assert cache.values() == ["next"], "the older over-budget entry leaves once a newer one arrives"


def test_an_entry_count_bound_evicts_the_oldest_too() -> None:
    cache: BoundedCache[str, str] = BoundedCache(10**9, max_entries=2)
    for key in ("a", "b", "c"):
        cache.put(key, key, size=1)
    assert cache.values() == ["b", "c"]


def test_an_entry_count_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        BoundedCache(100, max_entries=0)


def test_putting_an_existing_key_replaces_its_value_and_size_and_refreshes_it() -> None:
    cache: BoundedCache[str, str] = BoundedCache(100)
    cache.put("a", "old", size=40)
    cache.put("b", "b", size=10)
    cache.put("a", "new", size=20)
    assert cache.values() == ["b", "new"]
    assert cache.nbytes == 30


def test_the_sizer_measures_a_value_put_without_a_size() -> None:
    cache: BoundedCache[str, bytes] = BoundedCache(10, len)
    cache.put("a", b"12345")
    cache.put("b", b"123456")
    assert cache.values() == [b"123456"] and cache.nbytes == 6
    cache.put("c", b"1", size=3)  # an explicit size wins over the sizer
    assert cache.nbytes == 9


def test_a_put_without_size_or_sizer_is_refused() -> None:
    cache: BoundedCache[str, str] = BoundedCache(10)
    with pytest.raises(ValueError, match="size"):
        cache.put("a", "a")
    assert len(cache) == 0


def test_pop_removes_an_entry_and_frees_its_bytes() -> None:
    cache: BoundedCache[str, str] = BoundedCache(100)
    cache.put("a", "a", size=30)
    cache.put("b", "b", size=20)
    assert cache.pop("a") == "a"
    assert cache.pop("a") is None
    assert cache.values() == ["b"] and cache.nbytes == 20
    assert (cache.hits, cache.misses) == (0, 0), "pop is not a lookup"


def test_concurrent_puts_pops_and_lookups_of_shared_keys_keep_the_counts_exact() -> None:
    cache: BoundedCache[YieldingKey, int] = BoundedCache(60)

    def churn(thread: int) -> None:
        for index in range(400):
            key = YieldingKey(index % 20)
            if (index + thread) % 5 == 0:
                cache.pop(key)
            else:
                size = 1 + (index + thread) % 7
                cache.put(key, size, size=size)  # the value is its own size, to check the count against
            cache.get(YieldingKey(thread))

    run_in_threads(8, churn)
    assert cache.nbytes == sum(cache.values())
    assert cache.nbytes <= 60 and len(cache) == len(cache.values())
    assert cache.hits + cache.misses == 8 * 400, "every lookup counted once"

