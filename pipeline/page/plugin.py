"""The Airflow plugin: the page's app at ``/conversions`` and its entry in the UI's navigation.

Registered through the ``airflow.plugins`` entry point in ``pyproject.toml``, so installing the
package is enough: nothing is copied into a plugins folder. Only the api-server serves the app;
the DAG processor parses nothing new for it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

from pipeline.page.app import app

URL_PREFIX = "/conversions"  # not under Airflow's RESERVED_URL_PREFIXES (/api/v2, /ui, /auth...)


class ConversionsPlugin(AirflowPlugin):
    name = "conversions"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": app, "url_prefix": URL_PREFIX, "name": "Conversions"}
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
