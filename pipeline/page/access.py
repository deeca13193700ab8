"""Who may use the page, and from where: Airflow's own login and roles, and no cross-site posts.

Airflow does not authenticate a plugin's FastAPI app (its routes inherit none of the core API's
dependencies), so every route of the page depends on one of the two below, which call Airflow's
auth manager: ``can_read`` (the DAG permission ``GET`` on the conversions DAGs: a viewer) and
``can_write`` (``POST`` on their runs: a user who may trigger them). No login is 401, a refusal
403, as in the core API.

A browser sends the ``_token`` cookie with any request to the api-server, including a form
another site posts; such a post carries that site's ``Origin``. So a state-changing request
must come from the page's own origin (``Origin``, else ``Referer``), or carry its token in an
``Authorization`` header, which no other site can make a browser send.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
from fastapi import HTTPException, Request

# The DAG whose permissions stand for the page's: it runs what the page puts in the inbox.
DAG_ID = "conversions_file_drop"

can_read = requires_access_dag("GET", param_dag_id=DAG_ID)
can_write = requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=DAG_ID)

__all__ = ["DAG_ID", "can_read", "can_write", "get_user", "same_origin"]


def same_origin(request: Request) -> None:
    """Refuse (403) a state-changing request that another site's page may have sent."""
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return
    sent = request.headers.get("origin") or request.headers.get("referer")
    if not sent or sent == "null":
        raise HTTPException(403, "refused: the request does not say which page sent it")
    sender = urlsplit(sent)
    host = request.headers.get("host", "")
    if sender.netloc.lower() != host.lower():
        raise HTTPException(
            403, f"refused: a form from another site ({sender.scheme}://{sender.netloc})"
        )
