"""The Airflow plugin: the page's app at ``/conversions`` and its entry in the UI's navigation.

Registered through the ``airflow.plugins`` entry point in ``pyproject.toml``, so installing the
package is enough: nothing is copied into a plugins folder. Only the api-server serves the app;
the DAG processor parses nothing new for it.

Every Airflow process loads its plugins (the scheduler, the DAG processor, the triggerer and each
task's process), and the page's app needs the engine (pandas, pandera) and Airflow's API security
module: seconds of imports that only the api-server has any use for. So this module imports
nothing but Airflow's plugin base, and the app is imported on the page's first request, in a
worker thread, so that the api-server's event loop (which also serves the tasks' execution API)
never waits for it.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/conversions"  # not under Airflow's RESERVED_URL_PREFIXES (/api/v2, /ui, /auth...)


class LazyApp:
    """An ASGI app that imports ``pipeline.page.app`` when the first request comes."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._app is None:
                from pipeline.page.app import app

                self._app = app
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self._app
        if app is None:
            import anyio.to_thread

            app = await anyio.to_thread.run_sync(self._load)
        await app(scope, receive, send)


class ConversionsPlugin(AirflowPlugin):
    name = "conversions"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "Conversions"}
    ]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "Conversions",
            "href": "conversions/uploads",  # relative: works under any [api] base_url
            "url_route": "conversions",  # shown inside the UI, in an iframe
            "destination": "nav",
            "category": "browse",
        }
    ]
