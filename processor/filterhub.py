"""Distribution of filters to subscribed hunters.

Each subscriber (a hunter's SubscribeFilters stream) gets a queue. It starts with
the complete set that applies to it, read under the hub's lock together with the
version, so no change can fall between that snapshot and the first delta. Every
later change reaches every subscriber in version order as an update holding the
filters that now apply to it and the ids that no longer do.

A filter applies to a hunter when it is enabled, its type is one the hunter can
apply, and its target list is empty or names the hunter.

In a processor tree a processor below subscribes too (``everything``): it gets every
filter, disabled and targeted ones included, and hands them on to its own hunters and
processors (:meth:`FilterHub.apply_upstream` on its side), so a filter set at the top
reaches every hunter of the tree, with the version the top gave it. A filter set at a
processor goes down its own subtree only, never up.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from lc.common.filters import Filter
from lc.common.wire import filter_to_proto
from lc.processor.store import UPSTREAM, FilterStore, StoredFilter
from lc.proto import lc_pb2

__all__ = ["FilterHub", "Subscription", "applies"]


def applies(f: Filter, hunter_id: str, types: Collection[str]) -> bool:
    return f.enabled and f.type in types and (not f.hunters or hunter_id in f.hunters)


@dataclass(eq=False)
class Subscription:
    hunter_id: str
    types: frozenset[str]
    updates: queue.Queue = field(default_factory=queue.Queue)
    everything: bool = False  # a processor below: every filter, to pass down

    def wants(self, f: Filter) -> bool:
        return self.everything or applies(f, self.hunter_id, self.types)


class FilterHub:
    def __init__(self, store: FilterStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._subs: set[Subscription] = set()

    def proto(self, f: Filter, version: int) -> lc_pb2.Filter:
        """A stored filter as its wire message (``origin`` upstream when pushed down)."""
        pb = filter_to_proto(f, version)
        if f.id in self.store.upstream_ids:
            pb.origin = UPSTREAM
        return pb

    def subscribe(
        self, hunter_id: str, types: Iterable[str], everything: bool = False
    ) -> Subscription:
        sub = Subscription(hunter_id, frozenset(types), everything=everything)
        with self._lock:
            stored, version = self.store.all()
            sub.updates.put(
                lc_pb2.FilterUpdate(
                    version=version,
                    full=True,
                    filters=[self.proto(f, v) for f, v in stored if sub.wants(f)],
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
            self._fan_out(stored, [], version)
            return stored, version

    def apply_upstream(self, upd: lc_pb2.FilterUpdate) -> int:
        """A FilterUpdate from the upstream processor (this one's subscription to it):
        stored, then handed down to this processor's subscribers. Returns the set version."""
        incoming = [(_from_proto(pb), pb.version) for pb in upd.filters]
        with self._lock:
            if upd.full:
                changed, gone, version = self.store.replace_upstream(incoming)
            else:
                changed, gone, version = self.store.apply_upstream(incoming, list(upd.removed))
            if changed or gone:
                self._fan_out(changed, gone, version)
            return version

    def _fan_out(self, changed: list[StoredFilter], gone: list[str], version: int) -> None:
        """Tell every subscriber about filters created or changed and ids removed."""
        for sub in self._subs:
            upd = lc_pb2.FilterUpdate(version=version, removed=gone)
            for f, v in changed:
                if sub.wants(f):
                    upd.filters.append(self.proto(f, v))
                else:
                    upd.removed.append(f.id)
            sub.updates.put(upd)

    def delete(self, filter_id: str) -> int:
        with self._lock:
            _, version = self.store.delete(filter_id)
            for sub in self._subs:
                sub.updates.put(lc_pb2.FilterUpdate(version=version, removed=[filter_id]))
            return version

    def for_hunter(self, hunter_id: str, types: Collection[str]) -> tuple[list[StoredFilter], int]:
        """The filters that apply to one hunter, and the set version."""
        stored, version = self.store.all()
        return [(f, v) for f, v in stored if applies(f, hunter_id, types)], version

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)


def _from_proto(pb: lc_pb2.Filter) -> Filter:
    return Filter(
        id=pb.id,
        type=pb.type,
        pattern=pb.pattern,
        enabled=pb.enabled,
        description=pb.description,
        hunters=tuple(pb.hunters),
    )
