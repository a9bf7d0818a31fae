"""The real Kubernetes client: :class:`~sidecar.kube.api.KubeApi` over kubernetes_asyncio.

kubernetes_asyncio is the official generated client's asyncio port: it runs on aiohttp (which
promgate already uses), and loads in-cluster service-account config and kubeconfig files
(contexts, token files, exec plugins, client certificates) the way kubectl does. Only its
transport and config loading are used: requests go through ``ApiClient.call_api`` and answers
stay plain JSON dicts, so no field of a user's object is lost to a generated model.

Errors leave as :class:`~sidecar.errors.KubeError` and its subclasses only, with the server's
Status message and the credentials masked.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from sidecar.errors import KubeConflictError, KubeError, KubeInvalidError, KubeNotFoundError
from sidecar.kube.api import Kind, KubeApi, Object
from sidecar.redaction import redact

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
"""Where a Pod finds its service account's token, CA certificate and namespace."""
ANSWERS = {200: "object", 201: "object", 202: "object"}
"""Deserialize every success as plain JSON."""
_REFUSALS: dict[int, type[KubeError]] = {
    404: KubeNotFoundError,
    409: KubeConflictError,
    422: KubeInvalidError,
}
"""Answers that say what is wrong with the request itself, each its own error type."""
_HINTS = {
    401: "check the kubeconfig's credentials or the service account token",
    403: "grant promgate's service account RBAC for this resource and verb",
}


def in_cluster() -> bool:
    """Whether this process runs in a Pod (the API server's address is in the environment)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


async def connect(
    kubeconfig: Path | None = None, *, context: str | None = None, timeout_s: float = 10.0
) -> KubeApi:
    """A client for the cluster: the Pod's service account when ``kubeconfig`` is None and
    this runs in a cluster, else the kubeconfig file (default ``$KUBECONFIG`` or
    ``~/.kube/config``) and its ``context``. ``timeout_s`` bounds each request."""
    source = _source(kubeconfig)
    configuration = Configuration()
    try:
        if kubeconfig is None and in_cluster():
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration,
                token_filename=str(SERVICE_ACCOUNT_DIR / "token"),
                cert_filename=str(SERVICE_ACCOUNT_DIR / "ca.crt"),
            )
        else:
            await config.load_kube_config(
                config_file=str(kubeconfig) if kubeconfig is not None else None,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
        client = ApiClient(configuration)
    except (ConfigException, OSError, ValueError, yaml.YAMLError, ssl.SSLError) as error:
        message = redact(str(error), _secrets(configuration))
        raise KubeError(
            f"cannot configure the Kubernetes client from {source}: {message}; "
            "set PROMGATE_KUBECONFIG to a valid kubeconfig, or run in a Pod with a service account"
        ) from None
    return KubernetesApi(client, timeout_s=timeout_s)


def _source(kubeconfig: Path | None) -> str:
    """Where the client configuration comes from, for messages; a named kubeconfig that does
    not exist is refused here, before the loader's vaguer complaint."""
    if kubeconfig is None:
        return "the in-cluster service account" if in_cluster() else "$KUBECONFIG or ~/.kube/config"
    if not kubeconfig.is_file():
        raise KubeError(
            f"kubeconfig {kubeconfig} does not exist: set PROMGATE_KUBECONFIG to a kubeconfig file"
        )
    return f"kubeconfig {kubeconfig}"


def default_namespace(kubeconfig: Path | None = None, *, context: str | None = None) -> str:
    """The namespace to work in: the Pod's own (in a cluster), else the kubeconfig context's,
    else ``default``."""
    namespace_file = SERVICE_ACCOUNT_DIR / "namespace"
    if kubeconfig is None and in_cluster() and namespace_file.is_file():
        return namespace_file.read_text().strip() or "default"
    try:
        contexts, current = config.list_kube_config_contexts(
            config_file=str(kubeconfig) if kubeconfig is not None else None
        )
    except (ConfigException, OSError, ValueError, yaml.YAMLError):
        return "default"
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else "default"


def _secrets(configuration: Configuration) -> list[str]:
    """What a message must never show: the bearer token (in every form) and a password."""
    found: list[str] = [configuration.password or ""]
    for value in (configuration.api_key or {}).values():
        if isinstance(value, str):
            found += [value, value.removeprefix("Bearer ").strip()]
    return [secret for secret in found if secret]


class KubernetesApi:
    """:class:`~sidecar.kube.api.KubeApi` on one kubernetes_asyncio ``ApiClient`` (one
    aiohttp connection pool)."""

    def __init__(self, client: ApiClient, *, timeout_s: float) -> None:
        self._client = client
        self._timeout_s = timeout_s

    async def get(self, kind: Kind, namespace: str, name: str) -> Object:
        return await self._call("GET", kind.path(namespace, name))

    async def list(
        self, kind: Kind, namespace: str, *, labels: Mapping[str, str] | None = None
    ) -> Sequence[Object]:
        query = (
            [("labelSelector", ",".join(f"{k}={v}" for k, v in labels.items()))] if labels else []
        )
        answer = await self._call("GET", kind.path(namespace), query=query)
        # a built-in list's items carry no apiVersion or kind: fill them in, so each item
        # can be written back as it is
        typed = {"apiVersion": kind.api_version, "kind": kind.kind}
        return [typed | item for item in answer.get("items") or []]

    async def create(self, kind: Kind, namespace: str, body: Object) -> Object:
        return await self._call("POST", kind.path(namespace), body=body)

    async def replace(self, kind: Kind, namespace: str, body: Object) -> Object:
        return await self._call("PUT", kind.path(namespace, _name_of(kind, body)), body=body)

    async def replace_status(self, kind: Kind, namespace: str, body: Object) -> Object:
        path = kind.path(namespace, _name_of(kind, body), "status")
        return await self._call("PUT", path, body=body)

    async def delete(
        self, kind: Kind, namespace: str, name: str, *, resource_version: str | None = None
    ) -> None:
        options = None
        if resource_version is not None:
            options = {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "preconditions": {"resourceVersion": resource_version},
            }
        await self._call("DELETE", kind.path(namespace, name), body=options)

    async def close(self) -> None:
        await self._client.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Object | None = None,
        query: Sequence[tuple[str, str]] = (),
    ) -> Object:
        try:
            answer = await self._client.call_api(
                path,
                method,
                query_params=list(query),
                header_params={"Accept": "application/json", "Content-Type": "application/json"},
                body=body,
                response_types_map=ANSWERS,
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=True,
                _request_timeout=self._timeout_s,
            )
        except ApiException as error:
            if error.status == 0:  # the client refused to build the request
                raise self._error(KubeError, f"{method} {path}: {error.reason}", 0, "") from None
            raise self._refusal(method, path, error) from None
        except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError) as error:
            host = self._client.configuration.host
            detail = str(error) or type(error).__name__
            raise self._error(
                KubeError,
                f"cannot reach the Kubernetes API at {host}: {detail} ({method} {path}); "
                "check the server address and the network",
                0,
                "",
            ) from None
        if not isinstance(answer, dict):
            raise self._error(KubeError, f"{method} {path}: the answer is not a JSON object", 0, "")
        return answer

    def _refusal(self, method: str, path: str, error: ApiException) -> KubeError:
        status = int(error.status)
        answer = _status_body(error.body)
        reason = str(answer.get("reason") or "")
        message = str(answer.get("message") or error.reason or "no message")
        if status in _REFUSALS:
            return self._error(_REFUSALS[status], f"{method} {path}: {message}", status, reason)
        hint = f"; {_HINTS[status]}" if status in _HINTS else ""
        text = f"the Kubernetes API answered {status} to {method} {path}: {message}{hint}"
        return self._error(KubeError, text, status, reason)

    def _error(self, cls: type[KubeError], message: str, status: int, reason: str) -> KubeError:
        safe = redact(message, _secrets(self._client.configuration))
        return cls(safe, status=status, reason=reason)


def _name_of(kind: Kind, body: Object) -> str:
    name = (body.get("metadata") or {}).get("name")
    if not name:
        raise KubeInvalidError(
            f"cannot write a {kind.kind} without metadata.name", reason="Invalid"
        )
    return str(name)


def _status_body(raw: Any) -> dict[str, Any]:
    """The Status object of an error answer; empty when the body is not one."""
    try:
        answer = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        return {}
    return answer if isinstance(answer, dict) else {}
