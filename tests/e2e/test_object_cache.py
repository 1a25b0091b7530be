"""The operator's watch-based object cache on the real local API server.

The cache must follow creates, updates and deletes as the API server reports them, keep out what its
selector excludes, recover when its watch breaks (a cut connection, then a relist that also drops what
was deleted meanwhile; 410 Gone), and never hand out its objects while it is not synced: the
decision's reader lists instead.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from edgeaigc.cluster.local import ClusterState
from edgeaigc.operator import constants as c
from edgeaigc.operator.object_cache import Backoff, ObjectCache, ObjectCaches, Watched
from edgeaigc.operator.observe import ClusterReader
from tests.e2e.conftest import REPO, Kubectl, wait_for

NAMESPACE = "object-cache"
MANAGED = {c.LABEL_MANAGED_BY: c.MANAGED_BY}


@pytest.fixture(scope="module")
def api(cluster: ClusterState, kubectl: Kubectl) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core = client.CoreV1Api(api_client)
    # The fleet's CRDs, so that the caches of EdgeNodes, InferenceModels and Cameras list them too.
    kubectl.run("apply", "--server-side", "-f", str(REPO / "crds"))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    try:
        yield api_client
    finally:
        core.delete_namespace(NAMESPACE)


def _config_map(core: client.CoreV1Api, name: str, value: str, labels: dict[str, str] | None = None) -> None:
    body = {"metadata": {"name": name, "labels": labels or {}}, "data": {"value": value}}
    core.create_namespaced_config_map(NAMESPACE, body)


def _values(cache: ObjectCache) -> dict[str, str] | None:
    items = cache.items()
    return None if items is None else {i["metadata"]["name"]: i["data"]["value"] for i in items}


def _config_maps(api_client: client.ApiClient, list_call: Callable[..., Any] | None = None) -> ObjectCache:
    core = client.CoreV1Api(api_client)

    def listing(**keywords: Any) -> Any:
        return core.list_namespaced_config_map(NAMESPACE, **keywords)

    watched = Watched("v1", "ConfigMap", list_call or listing, f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY}", NAMESPACE)
    return ObjectCache(watched, watch_timeout_s=60)


def test_the_cache_follows_creates_updates_and_deletes(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    _config_map(core, "before", "1", MANAGED)
    cache = _config_maps(api)
    cache.start()
    try:
        assert cache.items(wait_s=30) is not None, "the first list"
        assert _values(cache) == {"before": "1"}
        _config_map(core, "created", "a", MANAGED)
        _config_map(core, "not-ours", "x")  # outside the selector: never cached
        wait_for(lambda: _values(cache) == {"before": "1", "created": "a"}, 10, "the create")
        core.patch_namespaced_config_map("created", NAMESPACE, {"data": {"value": "b"}})
        wait_for(lambda: _values(cache) == {"before": "1", "created": "b"}, 10, "the update")
        core.delete_namespaced_config_map("before", NAMESPACE)
        wait_for(lambda: _values(cache) == {"created": "b"}, 10, "the delete")
        # Kept lean: server-side apply's bookkeeping is dropped, kind and apiVersion are set.
        (item,) = cache.items() or []
        assert "managedFields" not in item["metadata"] and (item["kind"], item["apiVersion"]) == ("ConfigMap", "v1")
        assert cache.lists == 1, "a healthy watch needs no relist"
    finally:
        cache.stop()
        assert cache.join(10)
        for name in ("created", "not-ours"):
            core.delete_namespaced_config_map(name, NAMESPACE)


def test_a_broken_watch_is_relisted_and_nothing_is_served_until_then(api: client.ApiClient) -> None:
    """The watch's connection is cut, and while no watch is open an object is created and another
    deleted: the cache must serve nothing until it has listed again, then hold the API server's state.
    Then the API server answers a watch with 410 Gone (the version left its watch cache, as after a
    long disconnection; injected here, a young cluster's watch cache still holds every version): the
    cache must list again at once."""
    core = client.CoreV1Api(api)
    _config_map(core, "stays", "1", MANAGED)
    _config_map(core, "goes", "1", MANAGED)
    watches: list[Any] = []
    lists: list[Any] = []  # what the cache served when each list began
    cache: ObjectCache

    def listing(**keywords: Any) -> Any:
        if keywords.get("watch"):
            if len(watches) == 1 and len(lists) == 2:
                watches.append("410")
                raise ApiException(status=410, reason="Gone")
            response = core.list_namespaced_config_map(NAMESPACE, **keywords)
            watches.append(response)
            return response
        lists.append(cache.items())
        if len(lists) == 2:  # the relist after the cut: changes no watch saw
            _config_map(core, "new", "1", MANAGED)
            core.delete_namespaced_config_map("goes", NAMESPACE)
        return core.list_namespaced_config_map(NAMESPACE, **keywords)

    cache = _config_maps(api, listing)
    cache.backoff = Backoff(base_s=0.1)
    cache.start()
    try:
        wait_for(lambda: _values(cache) == {"stays": "1", "goes": "1"} and watches, 30, "the list and the watch")
        watches[0].connection.sock.shutdown(socket.SHUT_RDWR)  # the connection breaks
        wait_for(lambda: len(lists) >= 2, 30, "a relist after the break")
        assert lists[1] is None, "served objects while not synced"
        wait_for(lambda: _values(cache) == {"stays": "1", "new": "1"}, 30, "the relist's state")
        # The next watch is answered with 410 Gone: listed again, then followed.
        wait_for(lambda: len(lists) >= 3, 30, "a relist after 410 Gone")
        assert lists[2] is None and watches[1] == "410"
        core.patch_namespaced_config_map("stays", NAMESPACE, {"data": {"value": "2"}})
        wait_for(lambda: _values(cache) == {"stays": "2", "new": "1"}, 10, "an update after the relists")
        assert cache.lists == 3
    finally:
        cache.stop()
        assert cache.join(10)
        for name in ("stays", "new"):
            core.delete_namespaced_config_map(name, NAMESPACE)


def _names(items: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(i["kind"], i["metadata"]["name"]) for i in items}


def test_the_decisions_reader_reads_the_caches_and_lists_when_they_are_not_synced(api: client.ApiClient) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    for policy in ("east", "west"):
        labels = {**MANAGED, c.LABEL_POLICY: policy}
        _config_map(core, f"{policy}-routing", "{}", labels)
        core.create_namespaced_service(
            NAMESPACE, {"metadata": {"name": f"{policy}-svc", "labels": labels}, "spec": {"ports": [{"port": 80}]}}
        )
        pod = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "inference", "image": "none"}]}}
        apps.create_namespaced_deployment(
            NAMESPACE,
            {
                "metadata": {"name": f"{policy}-model", "labels": labels},
                "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": pod},
            },
        )
    listed = ClusterReader(api)  # no caches: every read a list, as before
    caches = ObjectCaches(api)
    cached = ClusterReader(api, caches=caches)
    try:
        expected = _names(listed.owned(NAMESPACE, "east"))
        assert expected == {("ConfigMap", "east-routing"), ("Service", "east-svc"), ("Deployment", "east-model")}
        assert _names(cached.owned(NAMESPACE, "east")) == expected
        assert cached.allocatable() == listed.allocatable() and cached.allocatable()
        assert cached.listed == 0, "read from the caches once synced"
        # The Deployments' watch breaks (its cache is not synced): the reader lists them instead of
        # reading an empty or stale cache — a Deployment missing from a read looks like a model not cached.
        deployments = caches.hold(NAMESPACE)["Deployment"]
        caches.release(NAMESPACE)
        deployments.stop()
        assert deployments.items() is None
        assert _names(cached.owned(NAMESPACE, "west")) == {
            ("ConfigMap", "west-routing"),
            ("Service", "west-svc"),
            ("Deployment", "west-model"),
        }
        assert cached.listed == 1
    finally:
        cached.close()
        caches.close()
        for policy in ("east", "west"):
            core.delete_namespaced_config_map(f"{policy}-routing", NAMESPACE)
            core.delete_namespaced_service(f"{policy}-svc", NAMESPACE)
            apps.delete_namespaced_deployment(f"{policy}-model", NAMESPACE)


def test_caches_stop_with_their_last_holder(api: client.ApiClient) -> None:
    caches = ObjectCaches(api)
    first = caches.hold(NAMESPACE)
    assert caches.hold(NAMESPACE) is first
    caches.release(NAMESPACE)
    assert first["Pod"].items(wait_s=30) is not None, "still held once"
    caches.release(NAMESPACE)
    deadline = time.monotonic() + 10
    running = [name for name, cache in first.items() if not cache.join(max(0.0, deadline - time.monotonic()))]
    assert not running, f"still running: {running}"
    assert all(cache.items() is None for cache in first.values())


def test_a_refused_watch_backs_off_instead_of_relisting_at_once(api: client.ApiClient) -> None:
    """Lists allowed and watches refused (RBAC without ``watch``; the refusal injected here, the chart's
    e2e test checks the real Role): the cache stays unsynced after each list's watch fails, and lists
    less and less often instead of every ``base_s``."""
    core = client.CoreV1Api(api)
    lists: list[float] = []

    def listing(**keywords: Any) -> Any:
        if keywords.get("watch"):
            raise ApiException(status=403, reason="Forbidden")
        lists.append(time.monotonic())
        return core.list_namespaced_config_map(NAMESPACE, **keywords)

    cache = _config_maps(api, listing)
    cache.backoff = Backoff(base_s=0.2, max_s=10)
    cache.start()
    try:
        time.sleep(2.5)
    finally:
        cache.stop()
        assert cache.join(10)
    # 0.2, 0.4, 0.8, 1.6 s apart: at most 5 lists in 2.5 s (13 at a fixed 0.2 s).
    assert 2 <= len(lists) <= 5, [round(t - lists[0], 2) for t in lists]
