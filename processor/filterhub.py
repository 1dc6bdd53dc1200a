"""Distribution of filters to subscribed hunters.

Each subscriber (a hunter's SubscribeFilters stream) gets a queue. It starts with
the complete set that applies to it, read under the hub's lock together with the
version, so no change can fall between that snapshot and the first delta. Every
later change reaches every subscriber in version order as an update holding the
filters that now apply to it and the ids that no longer do.

A filter applies to a hunter when it is enabled, its type is one the hunter can
apply, and its target list is empty or names the hunter.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from lc.common.filters import Filter
from lc.common.wire import filter_to_proto
from lc.processor.store import FilterStore, StoredFilter
from lc.proto import lc_pb2

__all__ = ["FilterHub", "Subscription", "applies"]


def applies(f: Filter, hunter_id: str, types: Collection[str]) -> bool:
    return f.enabled and f.type in types and (not f.hunters or hunter_id in f.hunters)


@dataclass(eq=False)
class Subscription:
    hunter_id: str
    types: frozenset[str]
    updates: queue.Queue = field(default_factory=queue.Queue)


class FilterHub:
    def __init__(self, store: FilterStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._subs: set[Subscription] = set()

    def subscribe(self, hunter_id: str, types: Iterable[str]) -> Subscription:
        sub = Subscription(hunter_id, frozenset(types))
        with self._lock:
            stored, version = self.store.all()
            sub.updates.put(
                lc_pb2.FilterUpdate(
                    version=version,
                    full=True,
                    filters=[
                        filter_to_proto(f, v) for f, v in stored if applies(f, hunter_id, sub.types)
                    ],
                )
            )
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    def set_filters(self, filters: list[Filter]) -> tuple[list[StoredFilter], int]:
        with self._lock:
            stored, version = self.store.upsert(filters)
            for sub in self._subs:
                upd = lc_pb2.FilterUpdate(version=version)
                for f, v in stored:
                    if applies(f, sub.hunter_id, sub.types):
                        upd.filters.append(filter_to_proto(f, v))
                    else:
                        upd.removed.append(f.id)
                sub.updates.put(upd)
            return stored, version

    def delete(self, filter_id: str) -> int:
        with self._lock:
            _, version = self.store.delete(filter_id)
            for sub in self._subs:
                sub.updates.put(lc_pb2.FilterUpdate(version=version, removed=[filter_id]))
            return version

    def for_hunter(self, hunter_id: str, types: Collection[str]) -> tuple[list[StoredFilter], int]:
        stored, version = self.store.all()
        return [(f, v) for f, v in stored if applies(f, hunter_id, types)], version

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)
