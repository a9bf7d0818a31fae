"""Services promgate points at a release's pods: the candidate's and the slots' Services,
the blue-green preview, and the stable Service whose selector switches slots.

A Service promgate needs and does not find is created from the stable Service (its ports,
a ClusterIP); one it finds keeps everything but its selector.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from sidecar.actuators.kubernetes.workloads import MANAGED_BY
from sidecar.actuators.kubernetes.writes import actuation_error, call, update
from sidecar.errors import KubeConflictError, KubeError
from sidecar.kube.api import SERVICE, KubeApi, Object

_PORT_FIELDS = ("name", "port", "protocol", "targetPort", "appProtocol")


def with_selector(service: Object, selector: Mapping[str, str]) -> Object:
    """A copy of ``service`` that selects exactly ``selector``."""
    edited = copy.deepcopy(service)
    edited.setdefault("spec", {})["selector"] = dict(selector)
    return edited


def service_like(template: Object, name: str, selector: Mapping[str, str]) -> Object:
    """A new ClusterIP Service ``name`` with ``template``'s ports, selecting ``selector``."""
    ports: list[dict[str, Any]] = [
        {k: v for k, v in port.items() if k in _PORT_FIELDS}
        for port in template.get("spec", {}).get("ports") or []
    ]
    return {
        "apiVersion": SERVICE.api_version,
        "kind": SERVICE.kind,
        "metadata": {
            "name": name,
            "namespace": template.get("metadata", {}).get("namespace", ""),
            "labels": dict(MANAGED_BY),
        },
        "spec": {"type": "ClusterIP", "ports": ports, "selector": dict(selector)},
    }


class Services:
    """Service I/O: point a Service's selector at pods, creating the Service if needed."""

    def __init__(self, api: KubeApi) -> None:
        self._api = api

    async def select(
        self, namespace: str, name: str, selector: Mapping[str, str], *, like: str
    ) -> Object:
        """Make Service ``name`` select ``selector``, creating it with the ports of Service
        ``like`` when it does not exist; no write when it already selects that."""
        found: Object | None = None
        try:
            found = await self._api.get(SERVICE, namespace, name)
        except KubeError as exc:
            if exc.status != 404:
                raise actuation_error(exc, SERVICE, namespace, name) from None
            template = await call(self._api.get(SERVICE, namespace, like), SERVICE, namespace, like)
            try:
                return await self._api.create(
                    SERVICE, namespace, service_like(template, name, selector)
                )
            except KubeConflictError:
                pass  # created meanwhile: set its selector below
            except KubeError as error:
                raise actuation_error(error, SERVICE, namespace, name) from None
        return await update(
            self._api,
            SERVICE,
            namespace,
            name,
            lambda svc: with_selector(svc, selector),
            current=found,
        )
