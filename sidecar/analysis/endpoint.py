"""A Prometheus base URL whose credentials never reach a message or a log."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from yarl import URL

from sidecar.errors import SettingsError


@dataclass(frozen=True)
class Endpoint:
    """The parsed URL, what may be shown of it, and what must be hidden."""

    url: URL

    @classmethod
    def parse(cls, base_url: str, setting: str = "the Prometheus URL") -> Endpoint:
        """An absolute http(s) URL; the error does not echo the text, which may hold a
        password."""
        try:
            url = URL(base_url)
        except ValueError:
            url = URL()
        if url.scheme not in ("http", "https") or not url.host:
            raise SettingsError(
                f"{setting} must look like http(s)://[user:password@]host[:port][/path]"
            )
        return cls(url)

    @property
    def display_url(self) -> str:
        """The base URL without credentials, safe for logs and messages."""
        return str(self.url.with_user(None)).rstrip("/")

    @property
    def headers(self) -> dict[str, str]:
        """What to send with every request: basic auth from the URL's userinfo, if any."""
        user, password = self.url.user or "", self.url.password or ""
        if not user and not password:
            return {}
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}
