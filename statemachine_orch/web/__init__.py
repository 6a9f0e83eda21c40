"""
The task list on the web: a JSON API and server-rendered pages for tasks and instances.

Build the app on a client engine beside the workers, with an authenticator::

    from statemachine_orch import Engine, SqliteStore
    from statemachine_orch.web import TrustedHeader, create_app

    engine = Engine(SqliteStore("orders.db"), concurrency=0, workflows=[OrderProcess])
    app = create_app(engine, authenticator=TrustedHeader(), workflows=[OrderProcess])

and serve it with uvicorn (``orch serve`` does all of it). Needs the ``web``
extra (``pip install 'statemachine-orch[web]'``). See ``docs/web.md``.

.. versionadded:: 0.1.0
"""

from ._app import create_app as create_app
from ._auth import Authenticator as Authenticator
from ._auth import DevelopmentLogin as DevelopmentLogin
from ._auth import Identity as Identity
from ._auth import TrustedHeader as TrustedHeader

__all__ = ["Authenticator", "DevelopmentLogin", "Identity", "TrustedHeader", "create_app"]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("statemachine_orch.web._"):
        _obj.__module__ = __name__
