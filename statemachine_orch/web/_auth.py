"""
Who is asking: the authenticators, which give a request its user and groups.

Identity never comes from a request's body or query: an :class:`Authenticator`
reads it from what the deployment vouches for. :class:`TrustedHeader` reads the
headers a reverse proxy that authenticated the user sets; :class:`DevelopmentLogin`
lets anyone be anyone through a login page (a signed cookie) and is refused by
the app unless development mode is switched on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Final, Protocol

import attrs
from starlette.requests import HTTPConnection

from statemachine_orch._tasks import check_user

_GROUP: Final = re.compile(r"^[^\x00-\x1f\x7f-\x9f,]{1,200}$")
"""A group name: printable, no comma (the separator), at most 200 characters."""

MAX_GROUPS: Final = 100
"""The most groups one identity may carry."""


@attrs.frozen
class Identity:
    """
    The user a request is made by, and their groups, as an authenticator vouches for them.

    Attributes:
        user: The user name (non-empty, no control characters).
        groups: The user's groups, sorted, each once.

    .. versionadded:: 0.1.0
    """

    user: str
    groups: tuple[str, ...] = ()

    @classmethod
    def of(cls, user: str, groups: object = ()) -> Identity:
        """
        An identity from untrusted text: the user checked, the groups checked, sorted and made unique.

        Args:
            user: The user name.
            groups: The group names (an iterable of ``str``).

        Raises:
            ValueError: The user is empty or holds a control character; a group is
                empty, too long, holds a control character or a comma; more than
                :data:`MAX_GROUPS` groups.
            TypeError: The user is not a ``str``, or a group is not one.
        """
        check_user(user)
        if isinstance(groups, str) or not isinstance(groups, (list, tuple, set, frozenset)):
            msg = f"groups must be a list of group names, got {type(groups).__name__}"
            raise TypeError(msg)
        names: set[str] = set()
        for group in groups:  # pyright: ignore[reportUnknownVariableType] - checked one by one
            if not isinstance(group, str):
                msg = f"a group name must be a str, got {type(group).__name__}"  # pyright: ignore[reportUnknownArgumentType]
                raise TypeError(msg)
            if _GROUP.match(group) is None:
                msg = f"group {group!r} must be 1 to 200 printable characters without a comma"
                raise ValueError(msg)
            names.add(group)
        if len(names) > MAX_GROUPS:
            msg = f"at most {MAX_GROUPS} groups, got {len(names)}"
            raise ValueError(msg)
        return cls(user, tuple(sorted(names)))


class Authenticator(Protocol):
    """
    **Protocol:** who makes a request, as the deployment vouches for it.

    .. versionadded:: 0.1.0
    """

    @property
    def development(self) -> bool:
        """Whether anyone can be anyone with it (the app refuses it unless development mode is on)."""
        ...

    def identify(self, request: HTTPConnection) -> Identity | None:
        """The request's identity, or ``None`` when it carries none (or one that is not valid)."""
        ...


@attrs.frozen
class TrustedHeader:
    """
    The identity a reverse proxy in front of the app vouches for, in request headers.

    Deploy it only behind a proxy that authenticates every user and sets (never
    passes on from the client) these headers: anyone who can reach the app
    directly can claim to be anyone.

    Attributes:
        user_header: The header holding the user name (``X-Forwarded-User``).
        groups_header: The header holding the groups, separated by *separator*
            (``X-Forwarded-Groups``); missing: no groups.
        separator: What separates the groups (a comma).

    .. versionadded:: 0.1.0
    """

    user_header: str = "X-Forwarded-User"
    groups_header: str = "X-Forwarded-Groups"
    separator: str = ","
    development: bool = attrs.field(default=False, init=False)

    def identify(self, request: HTTPConnection) -> Identity | None:
        """
        The user and groups of the headers (UTF-8); ``None`` when the user header is missing or not a valid name.

        A groups header that is not valid (a name with a control character, too many)
        gives no identity either, rather than fewer groups.
        """
        user = _utf8(request.headers.get(self.user_header))
        if user is None:
            return None
        raw = _utf8(request.headers.get(self.groups_header, ""))
        if raw is None:
            return None
        groups = [g.strip() for g in raw.split(self.separator) if g.strip()]
        try:
            return Identity.of(user.strip(), groups)
        except (TypeError, ValueError):
            return None


def _utf8(header: str | None) -> str | None:
    """A header's text: its bytes (which Starlette reads as Latin-1) as UTF-8; ``None`` when they are not."""
    if header is None:
        return None
    try:
        return header.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return None


COOKIE: Final = "orch_dev_login"
"""The cookie :class:`DevelopmentLogin` keeps the chosen identity in."""


class DevelopmentLogin:
    """
    Development mode: a login page where anyone picks any user name and groups, without a password.

    For trying the pages on one's own machine only. The chosen identity is kept
    in a cookie signed with *secret* (HMAC-SHA256), so it cannot be edited in the
    browser; but anyone who can reach the login page can be anyone. The app
    refuses it unless it is created with ``development=True`` (``orch serve
    --dev-login``), and every page says so in a banner.

    Args:
        secret: The signing key (at least 16 bytes); a server started afresh
            may pass a random one (everyone logs in again).

    Raises:
        ValueError: *secret* is shorter than 16 bytes.

    .. versionadded:: 0.1.0
    """

    development = True

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:  # noqa: PLR2004 - 128 bits
            msg = f"DevelopmentLogin(secret=...): at least 16 bytes, got {len(secret)}"
            raise ValueError(msg)
        self._secret = secret

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._secret, payload, hashlib.sha256).hexdigest()

    def cookie_for(self, identity: Identity) -> str:
        """The cookie value that logs *identity* in."""
        payload = base64.urlsafe_b64encode(json.dumps([identity.user, list(identity.groups)]).encode()).decode()
        return f"{payload}.{self._sign(payload.encode())}"

    def identify(self, request: HTTPConnection) -> Identity | None:
        """The identity of a valid login cookie; ``None`` without one (or with one not signed by this secret)."""
        value = request.cookies.get(COOKIE)
        if not value or len(value) > 8192:  # noqa: PLR2004 - far more than any login needs
            return None
        payload, _, signature = value.rpartition(".")
        if not payload or not hmac.compare_digest(signature, self._sign(payload.encode())):
            return None
        try:
            user, groups = json.loads(base64.urlsafe_b64decode(payload.encode()))
            return Identity.of(user, groups)
        except (ValueError, TypeError):
            return None
