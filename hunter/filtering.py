"""The hunter's copy of the filters aimed at it.

``HunterFilters`` applies the processor's updates in version order (an update that
is not newer than the applied version is ignored, so nothing is applied twice; a
full update replaces everything, so a hunter that missed changes while away ends
with exactly the processor's set), compiles the engine off the hot path and hands
the result to the hunter, which gives it to its mode (:mod:`lc.hunter.modes`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable

from lc.common.errors import LcError
from lc.common.filters import Filter, FilterSet, compile_filters
from lc.common.wire import filter_to_proto
from lc.proto import lc_pb2

__all__ = ["HunterFilters"]

log = logging.getLogger(__name__)


class HunterFilters:
    def __init__(
        self,
        hunter_id: str,
        types: tuple[str, ...],
        on_change: Callable[[list[Filter], FilterSet], None],
        check: Callable[[Filter], None] | None = None,
    ) -> None:
        self.hunter_id = hunter_id
        self.types = types
        self.on_change = on_change
        # Raises LcError for a filter this hunter cannot apply (a bpf expression that
        # does not compile for its interfaces' link type): that filter is left out,
        # the rest of the set applies.
        self.check = check
        self._refused: set[tuple[str, str, str]] = set()  # logged already
        self.version = 0
        self._filters: dict[str, Filter] = {}
        self.received = threading.Event()  # the first complete set has arrived
        self._lock = threading.Lock()

    def apply(self, upd: lc_pb2.FilterUpdate) -> bool:
        """Apply one update from the processor; False when it was not newer."""
        with self._lock:
            if not upd.full and upd.version <= self.version:
                return False
            if upd.full:
                self._filters = {}
            for pb in upd.filters:
                self._filters[pb.id] = Filter(
                    id=pb.id,
                    type=pb.type,
                    pattern=pb.pattern,
                    enabled=pb.enabled,
                    description=pb.description,
                    hunters=tuple(pb.hunters),
                )
            for fid in upd.removed:
                self._filters.pop(fid, None)
            filters = list(self._filters.values())
            usable = self._usable(filters)
            compiled = compile_filters(usable, self.hunter_id, self.types)
            try:
                self.on_change(usable, compiled)
            except LcError as e:  # e.g. a BPF the kernel refuses: keep the previous set
                log.error("cannot apply filter set version %d: %s", upd.version, e)
                return False
            self.version = upd.version
            log.info("applied filter set version %d (%d filters)", upd.version, len(compiled))
            if self.cache_path:
                self._save(filters)
        self.received.set()
        return True

    def _usable(self, filters: list[Filter]) -> list[Filter]:
        """``filters`` without those that target this hunter but cannot work here (one
        such filter must not keep every later change from applying); each is logged
        once."""
        if self.check is None:
            return filters
        out = []
        for f in filters:
            if (
                f.enabled
                and f.type in self.types
                and (not f.hunters or self.hunter_id in f.hunters)
            ):
                try:
                    self.check(f)
                except LcError as e:
                    key = (f.id, f.type, f.pattern)
                    if key not in self._refused:
                        if len(self._refused) >= 1024:  # bounded: logged again, at worst
                            self._refused.clear()
                        self._refused.add(key)
                        log.error("filter %r cannot apply on this hunter, left out: %s", f.id, e)
                    continue
            out.append(f)
        return out

    # -- a copy on disk, so a hunter restarted while its processor is down keeps its set
    cache_path: str | None = None

    def _save(self, filters: list[Filter]) -> None:
        data = {"version": self.version, "filters": [f.to_json() for f in filters]}
        tmp = f"{self.cache_path}.tmp"
        try:
            with open(tmp, "w") as fh:
                # dumps, not dump: dump encodes with Python closures that name each
                # other (json.encoder._make_iterencode), ~30 objects of cyclic garbage
                # per filter set applied; dumps uses the C encoder (the same text).
                fh.write(json.dumps(data))
            os.replace(tmp, self.cache_path)
        except OSError as e:
            log.warning("cannot keep the filter set in %s: %s", self.cache_path, e)

    def load_cached(self, path: str) -> bool:
        """Apply the set a previous run kept at ``path`` (and keep later ones there).

        True when a set was applied. The processor's full set replaces it on connect.
        """
        self.cache_path = path
        try:
            with open(path) as fh:
                data = json.load(fh)
            filters = [Filter.from_mapping(d) for d in data["filters"]]
            version = int(data["version"])
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError, LcError) as e:
            log.warning("ignoring the kept filter set %s: %s", path, e)
            return False
        upd = lc_pb2.FilterUpdate(version=version, full=True)
        upd.filters.extend(filter_to_proto(f) for f in filters)
        ok = self.apply(upd)
        if ok:
            log.info("applied the filter set kept from the last run (version %d)", version)
        return ok
