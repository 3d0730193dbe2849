"""Shared region invalidation for Python's dogpile.cache, compatible with dogpile for Rust.

A region configured with ``SharedInvalidationStrategy`` shares ``region.invalidate()`` with
every process whose region has the same name on the same backend, Python or Rust (a Rust
region configured with ``shared_invalidation``)::

    from dogpile.cache import make_region
    from dogpile_shared_invalidation import SharedInvalidationStrategy

    region = make_region(name="users")
    region.configure(
        "dogpile.cache.redis",
        expiration_time=600,
        arguments={"host": "10.0.0.1", "port": 6379},
        region_invalidator=SharedInvalidationStrategy(region),
    )

The invalidation is a record in the backend under ``_dogpile_invalidation:<name>``: JSON
``{"at": <Unix seconds>, "hard": <bool>}``, the latest invalidation of that name (as
dogpile.cache's default strategy keeps only its latest). ``invalidate()`` writes it (and,
on redis, publishes it on a channel of the same name, which Rust processes subscribe to);
this strategy reads it at most every ``poll`` seconds and takes it when it is newer than
what this process knows. It works on any backend with ``get_serialized`` and
``set_serialized`` (dogpile.cache 1.1 and later: redis, memcached, ...).
"""

import json
import threading
import time

from dogpile.cache.api import NO_VALUE
from dogpile.cache.region import RegionInvalidationStrategy

__all__ = ["SharedInvalidationStrategy", "record_key"]


def record_key(name):
    """The backend key (and redis channel) of the record of the region named ``name``."""
    return "_dogpile_invalidation:%s" % name


class SharedInvalidationStrategy(RegionInvalidationStrategy):
    """A ``RegionInvalidationStrategy`` whose invalidations every process shares.

    :param region: the configured ``CacheRegion``; its ``name`` names the record, unless
        ``name`` is given.
    :param poll: how often, in seconds, the record is read (default 1).
    """

    def __init__(self, region, name=None, poll=1.0):
        self.region = region
        self.name = name or region.name
        if not self.name:
            raise ValueError(
                "shared invalidation needs a region name: make_region(name=...)"
            )
        self.key = record_key(self.name)
        self.poll = poll
        self._lock = threading.Lock()
        self._at = None
        self._hard = None
        self._read_at = None

    def _merge(self, at, hard):
        with self._lock:
            if self._at is None or at > self._at:
                self._at, self._hard = at, hard

    def _refresh(self):
        now = time.monotonic()
        if self._read_at is not None and now - self._read_at < self.poll:
            return
        self._read_at = now
        raw = self.region.backend.get_serialized(self.key)
        if raw is NO_VALUE or raw is None:
            return
        try:
            record = json.loads(raw)
            at, hard = float(record["at"]), record["hard"]
        except (ValueError, TypeError, KeyError):
            return
        if isinstance(hard, bool) and at > 0:
            self._merge(at, hard)

    def invalidate(self, hard=True):
        at = time.time()
        with self._lock:
            self._at, self._hard = at, bool(hard)
        record = json.dumps({"at": at, "hard": bool(hard)}).encode()
        backend = self.region.backend
        backend.set_serialized(self.key, record)
        client = getattr(backend, "writer_client", None)
        if client is not None and hasattr(client, "publish"):
            client.publish(self.key, record)

    def _state(self):
        self._refresh()
        with self._lock:
            return self._at, self._hard

    def is_invalidated(self, timestamp):
        at, _ = self._state()
        return at is not None and timestamp < at

    def is_hard_invalidated(self, timestamp):
        at, hard = self._state()
        return bool(hard) and at is not None and timestamp < at

    def is_soft_invalidated(self, timestamp):
        at, hard = self._state()
        return hard is False and at is not None and timestamp < at

    def was_hard_invalidated(self):
        at, hard = self._state()
        return bool(hard) and at is not None

    def was_soft_invalidated(self):
        at, hard = self._state()
        return hard is False and at is not None
