"""
CSRF protection of the pages' form posts: a signed double-submit token.

A browser gets a random nonce in a cookie of its own (``HttpOnly``,
``SameSite=Strict``); every form the pages render carries a token, the HMAC of
that nonce and the user, and a post is taken only when its token matches the
cookie's nonce and the identity of the request. Another site can make a browser
post, but it can neither read the cookie nor compute the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

from starlette.requests import HTTPConnection
from starlette.responses import Response

COOKIE: Final = "orch_csrf"
"""The cookie holding the browser's nonce."""

FIELD: Final = "csrf_token"
"""The form field holding the token."""

_NONCE_CHARS: Final = 43  # secrets.token_urlsafe(32)


class Csrf:
    """
    Makes and checks the tokens of one app (its secret signs them).

    Args:
        secret: The signing key; a random one per server is fine (a restart asks
            open forms to be loaded again).
        secure: Whether the cookie is sent over HTTPS only.
    """

    def __init__(self, secret: bytes, *, secure: bool = False) -> None:
        self._secret = secret
        self._secure = secure

    def nonce(self, request: HTTPConnection) -> tuple[str, bool]:
        """The browser's nonce, and whether it is new (then :meth:`remember` must set the cookie)."""
        found = request.cookies.get(COOKIE, "")
        if len(found) == _NONCE_CHARS and found.replace("-", "").replace("_", "").isalnum():
            return found, False
        return secrets.token_urlsafe(32), True

    def token(self, nonce: str, user: str) -> str:
        """The token forms carry for *user* in the browser holding *nonce*."""
        message = f"{nonce}\x00{user}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def valid(self, request: HTTPConnection, token: object, user: str) -> bool:
        """Whether *token* (a posted field) is this browser's token for *user*."""
        nonce = request.cookies.get(COOKIE, "")
        if not nonce or not isinstance(token, str):
            return False
        return hmac.compare_digest(token, self.token(nonce, user))

    def remember(self, response: Response, nonce: str) -> None:
        """Set the browser's nonce cookie on *response*."""
        response.set_cookie(COOKIE, nonce, httponly=True, samesite="strict", secure=self._secure, path="/")
