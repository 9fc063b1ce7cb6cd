"""How Verda's API is spoken: its base, its credentials (an OAuth2 token), its refusals.

Why apart: the token exchange and the error words are the same for every call the
provider makes; the provider itself only says which calls to make.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from ...errors import CapacityError, ProvisionError
from ..http import ApiClient, short_text

__all__ = ["CREDENTIAL", "ENDPOINT", "TokenAuth", "classify", "text_id"]

ENDPOINT = "https://api.verda.com/v1"
CREDENTIAL = "VERDA_CLIENT_ID and VERDA_CLIENT_SECRET"
_CAPACITY = re.compile(
    r"not enough resources|capacity|not available|no .*available"
    r"|insufficient (resources|capacity)|out of stock",
    re.I,
)


def classify(status: int, body: Any) -> Exception | None:
    """Verda refuses a launch it has no machine for with a 4xx or a 503 that says so
    ("Not enough resources to deploy …"): a capacity error, not one to retry."""
    if status in (400, 409, 422, 503) and _CAPACITY.search(short_text(body)):
        return CapacityError(f"verda: {short_text(body)}")
    return None


def _token_classify(status: int, body: Any) -> Exception | None:
    """A refused client id or secret is a 400/401 from the token endpoint."""
    if status in (400, 401, 403):
        return ProvisionError(
            f"verda rejected the credentials ({short_text(body)}): check {CREDENTIAL}"
        )
    return None


class TokenAuth:
    """A bearer token from ``POST /oauth2/token`` (client credentials), renewed a minute
    before it expires."""

    def __init__(
        self, base: str, client_id: str | None, client_secret: str | None, **options: Any
    ) -> None:
        self._id = client_id or os.environ.get("VERDA_CLIENT_ID", "").strip()
        self._secret = client_secret or os.environ.get("VERDA_CLIENT_SECRET", "").strip()
        if not self._id or not self._secret:
            raise ProvisionError(f"verda: no credentials: set {CREDENTIAL}")
        self._api = ApiClient("verda", base, CREDENTIAL, classify=_token_classify, **options)
        self._token: tuple[str, float] | None = None

    async def headers(self) -> dict[str, str]:
        """The ``Authorization`` header, fetching a token when there is none or it is old."""
        token = self._token
        if token is None or time.monotonic() > token[1]:
            body = await self._api.call(
                "POST",
                "/oauth2/token",
                json={
                    "grant_type": "client_credentials",
                    "client_id": self._id,
                    "client_secret": self._secret,
                },
            )
            if not isinstance(body, dict) or not body.get("access_token"):
                raise ProvisionError(f"verda: the token endpoint gave no token: check {CREDENTIAL}")
            lifetime = float(body.get("expires_in") or 3600)
            token = (str(body["access_token"]), time.monotonic() + max(30.0, lifetime - 60))
            self._token = token
        return {"Authorization": f"Bearer {token[0]}"}


def text_id(body: Any, what: str) -> str:
    """Verda answers a create with the new id as plain text (or a JSON string)."""
    if isinstance(body, str) and body.strip():
        return body.strip().strip('"')
    if isinstance(body, int) and not isinstance(body, bool):
        return str(body)  # a plain-text id that happens to be all digits parses as a number
    if isinstance(body, dict) and body.get("id"):
        return str(body["id"])
    raise ProvisionError(f"verda: creating the {what} gave no id ({short_text(body)})")
