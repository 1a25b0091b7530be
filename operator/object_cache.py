"""A watch-based cache of the objects a decision reads: list once, then follow a watch.

Every decision reads the fleet's custom resources, the Deployments, Services and ConfigMaps the
operator created, the model pods and the Nodes. Listed afresh every interval, that was most of a
decision at 100 nodes (~230 pods and ~460 owned objects, 2 MB of JSON per kind, 0.6-1.4 s on a
loaded 2-core machine). An :class:`ObjectCache` lists one kind once and then follows a watch from
the list's ``resourceVersion`` in a thread of its own, so a decision reads memory; the API server
sends only what changed.

Correctness before speed (what a decision may rely on):

- :meth:`ObjectCache.items` returns objects only while the cache is *synced*: listed, and its
  watch following without a gap. Before the first list, after a watch failed and until the relist
  that repairs it, it returns None and the caller lists the kind itself (:class:`ObjectCaches`'
  users do), so a decision never acts on a cache that may miss objects — an owned Deployment missing
  from the cache would look like a model not cached, and the next plan could then delete it.
- A watch that ends normally (the server closes it after ``timeout_seconds``) is resumed from the
  last ``resourceVersion`` it saw: no gap, the cache stays synced. ``410 Gone`` (the version is too
  old for the API server's watch cache) and any error make the cache unsynced and relist it, with
  exponential backoff after errors; a relist replaces the objects whole, so deletions missed while
  disconnected disappear too.
- Objects are stored as parsed from the API and replaced whole on every event, never changed in
  place: a list :meth:`ObjectCache.items` returned stays as it was while the watch goes on. Callers
  must not change the objects either.

Memory is bounded by what is watched: one namespace and a label selector (the operator's objects,
its model pods), each object without ``metadata.managedFields`` (server-side apply's bookkeeping, about
a third of a Deployment's JSON, read by nothing here); Nodes keep only their name and allocatable.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from edgeaigc.operator import constants as c

Resource = dict[str, Any]
log = logging.getLogger(__name__)

HTTP_GONE = 410


def without_managed_fields(item: Resource) -> Resource:
    """``item`` without ``metadata.managedFields`` (nothing in the operator reads them)."""
    item.get("metadata", {}).pop("managedFields", None)
    return item


def node_allocatable(item: Resource) -> Resource:
    """Of a Node, only what a decision reads: its name and ``status.allocatable``."""
    metadata = item.get("metadata") or {}
    return {
        "metadata": {"name": metadata.get("name"), "resourceVersion": metadata.get("resourceVersion")},
        "status": {"allocatable": (item.get("status") or {}).get("allocatable") or {}},
    }


@dataclasses.dataclass(frozen=True)
class Watched:
    """One kind of object to cache."""

    api_version: str
    kind: str
    list_call: Callable[..., Any]
    """A typed API's list method with its positional arguments bound (namespace, group, ...); it is called
    with the list and watch keyword arguments (``label_selector``, ``watch``, ``resource_version``, ...)."""
    label_selector: str = ""
    namespace: str = ""
    """Empty for cluster-scoped kinds."""
    trim: Callable[[Resource], Resource] = without_managed_fields
    """What of each object is kept (it may change the freshly parsed object it is given)."""

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.kind}s{where}" + (f" ({self.label_selector})" if self.label_selector else "")


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Waits between a failed list or watch and the next try: doubling from ``base_s`` up to ``max_s``."""

    base_s: float = 0.5
    max_s: float = 30.0

    def delay(self, failures: int) -> float:
        return float(min(self.max_s, self.base_s * 2 ** max(failures - 1, 0)))


class WatchFailed(RuntimeError):
    """The watch stream reported an error other than 410 Gone."""


class ObjectCache:
    """The objects of one :class:`Watched` kind, listed once and kept current by a watch (module docstring)."""

    def __init__(
        self,
        watched: Watched,
        watch_timeout_s: int = 300,
        connect_timeout_s: float = 10.0,
        backoff: Backoff = Backoff(),
    ) -> None:
        self.watched = watched
        self.watch_timeout_s = watch_timeout_s
        """The server ends each watch after this long (a random part added by it); the cache resumes it."""
        self.connect_timeout_s = connect_timeout_s
        self.backoff = backoff
        self.lists = 0
        """Lists made so far: the first, and one after each 410 Gone or failure."""
        self._objects: dict[tuple[str, str], Resource] = {}
        self._resource_version = ""
        self._synced = False
        self._changed = threading.Condition()
        self._stopped = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None
        self._failures = 0

    def start(self) -> None:
        """List and follow the watch in a daemon thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"watch {self.watched}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread without waiting for it: the open watch is shut down, so its blocked read returns."""
        self._stopped.set()
        with self._changed:
            self._synced = False
            self._changed.notify_all()
        _shut_down(self._response)

    def join(self, timeout_s: float) -> bool:
        """Wait for the thread after :meth:`stop`; whether it ended."""
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self._thread is None or not self._thread.is_alive()

    @property
    def synced(self) -> bool:
        return self._synced

    def items(self, wait_s: float = 0.0) -> list[Resource] | None:
        """The objects now, if the cache is synced within ``wait_s`` seconds; None if not (list them yourself).

        The objects are shared with the cache: read them, never change them.
        """
        with self._changed:
            self._changed.wait_for(lambda: self._synced or self._stopped.is_set(), timeout=wait_s)
            return list(self._objects.values()) if self._synced else None

    def _key(self, item: Resource) -> tuple[str, str]:
        metadata = item["metadata"]
        return metadata.get("namespace") or "", metadata["name"]

    def _kept(self, item: Resource) -> Resource:
        item = self.watched.trim(item)
        item.setdefault("apiVersion", self.watched.api_version)
        item.setdefault("kind", self.watched.kind)
        return item

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._list()
                self._follow()  # returns on 410 Gone: relist at once
            except Exception as error:  # the API server down, a broken stream, RBAC: relist after a pause
                self._unsync()
                if self._stopped.is_set():
                    return
                self._failures += 1
                delay = self.backoff.delay(self._failures)
                detail = f"{error.status} {error.reason}" if isinstance(error, ApiException) else repr(error)
                log.warning("cache of %s: %s; listing again in %.1f s", self.watched, detail, delay)
                self._stopped.wait(delay)

    def _list(self) -> None:
        response = self.watched.list_call(
            label_selector=self.watched.label_selector,
            _preload_content=False,
            _request_timeout=(self.connect_timeout_s, 60),
        )
        listing = json.loads(response.data)
        objects = {self._key(item): self._kept(item) for item in listing.get("items") or []}
        with self._changed:
            self._objects = objects
            self._resource_version = listing["metadata"]["resourceVersion"]
            self._synced = not self._stopped.is_set()
            self.lists += 1
            self._changed.notify_all()

    def _unsync(self) -> None:
        with self._changed:
            self._synced = False

    def _follow(self) -> None:
        """Apply watch events until 410 Gone (return) or an error (raise); resume after a normal end."""
        while not self._stopped.is_set():
            try:
                self._response = self.watched.list_call(
                    label_selector=self.watched.label_selector,
                    watch=True,
                    resource_version=self._resource_version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self.watch_timeout_s,
                    _preload_content=False,
                    # A read timeout beyond the server's own end of the watch: a connection that died
                    # silently is noticed instead of leaving the cache synced but stale forever.
                    _request_timeout=(self.connect_timeout_s, self.watch_timeout_s + 60),
                )
            except ApiException as error:
                if error.status != HTTP_GONE:
                    raise
                log.info("cache of %s: 410 Gone; listing again", self.watched)
                self._unsync()
                return
            if self._stopped.is_set():  # stop() came before this watch was open: it could not shut it down
                self._response.close()
                return
            # Failures count until a watch opens, not a list: a list allowed and a watch refused (RBAC without
            # `watch`) must back off too, not relist every half second.
            self._failures = 0
            try:
                for line in iter_resp_lines(self._response):
                    if line and not self._apply(json.loads(line)):
                        self._unsync()
                        return
            finally:
                response, self._response = self._response, None
                response.close()  # not back into the pool with unread events in it
                response.release_conn()

    def _apply(self, event: Resource) -> bool:
        """One watch event into the cache; False on 410 Gone (the cache must be listed again)."""
        kind, item = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if item.get("code") == HTTP_GONE:
                log.info("cache of %s: %s; listing again", self.watched, item.get("message", "410 Gone"))
                return False
            raise WatchFailed(f"{item.get('code')} {item.get('reason')}: {item.get('message')}")
        version = item["metadata"]["resourceVersion"]
        with self._changed:
            if kind == "DELETED":
                self._objects.pop(self._key(item), None)
            elif kind in ("ADDED", "MODIFIED"):
                self._objects[self._key(item)] = self._kept(item)
            self._resource_version = version  # BOOKMARK: only the version moves on
        return True


def _shut_down(response: Any) -> None:
    """Shut down an open watch's socket, so that the thread blocked reading it returns."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):  # closed already
            sock.shutdown(socket.SHUT_RDWR)


def namespace_kinds(api_client: ApiClient, namespace: str) -> dict[str, Watched]:
    """What a decision reads in one namespace, by name (the fleet, the operator's objects, its model pods).

    Namespace-wide, not per policy: policies of one namespace (shards) share the watches, and each takes its
    own objects by their policy label.
    """
    custom, apps, core = CustomObjectsApi(api_client), AppsV1Api(api_client), CoreV1Api(api_client)
    managed = f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY}"

    def fleet_kind(kind: str, plural: str) -> Watched:
        list_call = _bound(custom.list_namespaced_custom_object, c.GROUP, c.VERSION, namespace, plural)
        return Watched(f"{c.GROUP}/{c.VERSION}", kind, list_call, namespace=namespace)

    return {
        c.PLURAL_EDGE_NODES: fleet_kind("EdgeNode", c.PLURAL_EDGE_NODES),
        c.PLURAL_MODELS: fleet_kind("InferenceModel", c.PLURAL_MODELS),
        c.PLURAL_CAMERAS: fleet_kind("Camera", c.PLURAL_CAMERAS),
        # The namespace's policies: a shard checks its selector against the others' every interval.
        c.PLURAL_POLICIES: fleet_kind("PlacementPolicy", c.PLURAL_POLICIES),
        "Deployment": Watched(
            "apps/v1", "Deployment", _bound(apps.list_namespaced_deployment, namespace), managed, namespace
        ),
        "Service": Watched("v1", "Service", _bound(core.list_namespaced_service, namespace), managed, namespace),
        "ConfigMap": Watched("v1", "ConfigMap", _bound(core.list_namespaced_config_map, namespace), managed, namespace),
        # Every model pod carries its policy's label (edge and cloud, builders.py).
        "Pod": Watched("v1", "Pod", _bound(core.list_namespaced_pod, namespace), c.LABEL_POLICY, namespace),
    }


def node_kind(api_client: ApiClient) -> Watched:
    return Watched("v1", "Node", CoreV1Api(api_client).list_node, trim=node_allocatable)


def _bound(call: Callable[..., Any], *arguments: Any) -> Callable[..., Any]:
    def list_call(**keywords: Any) -> Any:
        return call(*arguments, **keywords)

    return list_call


class ObjectCaches:
    """The caches of one operator process, started on first use and shared by the policies that read them.

    Each namespace's caches (and the Nodes', under the namespace ``""``) run while a reader holds it
    (:meth:`hold`, :meth:`release`). The watches use an API client of their own: each holds a connection
    open, which must not starve the reconcile's writes of the shared client's pool.
    """

    def __init__(self, api_client: ApiClient, watch_timeout_s: int = 300, backoff: Backoff = Backoff()) -> None:
        configuration = copy.deepcopy(api_client.configuration)
        configuration.connection_pool_maxsize = 16  # 8 watches, and the lists of a relist beside them
        self.api_client = ApiClient(configuration)
        self.watch_timeout_s = watch_timeout_s
        self.backoff = backoff
        self._caches: dict[str, dict[str, ObjectCache]] = {}
        self._holders: dict[str, int] = {}
        self._lock = threading.Lock()

    def hold(self, namespace: str) -> dict[str, ObjectCache]:
        """The caches of ``namespace`` (``""``: the Nodes), started if they are not running."""
        with self._lock:
            if namespace not in self._caches:
                kinds = (
                    namespace_kinds(self.api_client, namespace) if namespace else {"Node": node_kind(self.api_client)}
                )
                caches = {
                    name: ObjectCache(watched, self.watch_timeout_s, backoff=self.backoff)
                    for name, watched in kinds.items()
                }
                for cache in caches.values():
                    cache.start()
                self._caches[namespace] = caches
            self._holders[namespace] = self._holders.get(namespace, 0) + 1
            return self._caches[namespace]

    def release(self, namespace: str) -> None:
        """One holder less; the namespace's caches stop with the last."""
        with self._lock:
            self._holders[namespace] = self._holders.get(namespace, 1) - 1
            stopping = self._caches.pop(namespace, {}) if self._holders[namespace] <= 0 else {}
            if stopping:
                del self._holders[namespace]
        for cache in stopping.values():
            cache.stop()

    def close(self) -> None:
        """Stop every cache."""
        with self._lock:
            caches = [cache for by_kind in self._caches.values() for cache in by_kind.values()]
            self._caches.clear()
            self._holders.clear()
        for cache in caches:
            cache.stop()
