"""The page's routes: upload (check first, then apply), add by hand, update status, template,
the uploads and one upload's detail.

Every route goes through the engine as the CLI and the DAGs do: a Check first is
``ingest.ingest_file`` with ``dry_run`` (a ``dry_run`` ledger row and reports, nothing else
changed); Apply, Add conversions and Update status put a file into the inbox
(``datadir.delivery``) and the file-drop DAG applies it, so there is one code path, one ledger
and one history. The page only reads the ledger, the history and the reports it links to.

Routes are plain ``def`` (FastAPI runs them in a thread pool): a dry run of a large file must
not stall the api-server's event loop.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import mimetypes
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from pipeline import console, export, warehouse
from pipeline.context import Context
from pipeline.core import money
from pipeline.core.reasons import CATALOGUE
from pipeline.core.vocabulary import (
    APPLIED,
    DRY_RUN,
    DUPLICATE_FILE,
    KINDS,
    LEDGER_STATES,
    MODES,
    OUTCOMES,
    QUARANTINED,
    STATUSES,
)
from pipeline.datadir import delivery
from pipeline.datadir.layout import Layout, read_json, sha256_file
from pipeline.ingest import Upload, ingest_file
from pipeline.page import access, forms

TEMPLATES = Jinja2Templates(directory=Path(__file__).with_name("templates"))
CONNECTION_ID = "conversions_warehouse"
_CHUNK = 1 << 20
_OUTCOME_COLOURS = {
    "inserted": "#2e7d32",
    "updated": "#1565c0",
    "incremented": "#6a1b9a",
    "status_updated": "#00838f",
    "ignored_duplicate": "#9e9e9e",
    "rejected": "#c62828",
}

# A ledger state in a media buyer's words (the console's are a run log's).
STATE_WORDS = {
    APPLIED: "applied",
    DRY_RUN: "checked only, nothing changed",
    QUARANTINED: "refused, nothing applied",
    DUPLICATE_FILE: "sent before, nothing applied",
}

app = FastAPI(title="Conversions", docs_url=None, redoc_url=None, openapi_url=None)


# --- what the routes work with -------------------------------------------------------------


def _warehouse_url() -> str | None:
    """The ``conversions_warehouse`` connection's URL, as the DAGs' tasks use it, or None."""
    from airflow.models.connection import Connection

    from pipeline import runtime

    try:
        conn = Connection.get_connection_from_secrets(CONNECTION_ID)
    except Exception:  # not defined (AirflowNotFoundException): the tasks fall back likewise
        return None
    return runtime.url_of(conn)


@functools.cache
def _airflow_context() -> Context:
    from pipeline import runtime

    return runtime.airflow_context(_warehouse_url())


def page_context() -> Context:
    """The run context of the page: the same data directory, config and warehouse as the
    DAGs' tasks (``runtime.airflow_context``), opened once per api-server process."""
    return _airflow_context()


ContextDep = Annotated[Context, Depends(page_context)]
Reader = Annotated[Any, Depends(access.can_read)]
Writer = Annotated[Any, Depends(access.can_write)]
User = Annotated[Any, Depends(access.get_user)]


def _layout(ctx: Context) -> Layout:
    layout = getattr(ctx.datadir, "layout", None)
    if layout is None:
        raise HTTPException(501, "the page needs a data directory on a file system")
    return layout


def _url(request: Request, path: str) -> str:
    """An absolute path under wherever the page is mounted (``/conversions``)."""
    return f"{request.scope.get('root_path', '')}/{path}"


def _render(request: Request, template: str, user: Any, status_code: int = 200, **values: Any):
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "user": user.get_name(),
            "base": request.scope.get("root_path", ""),
            "page": template.removesuffix(".html"),
            **values,
        },
        status_code=status_code,
    )


def _form_defaults(ctx: Context) -> dict[str, Any]:
    return {
        "offer_sources": sorted(ctx.config.offer_sources),
        "kinds": KINDS,
        "modes": MODES,
        "statuses": STATUSES,
        "max_bytes": ctx.config.settings.max_file_bytes,
    }


def _offer_source(ctx: Context, name: str) -> str:
    if name not in ctx.config.offer_sources:
        known = ", ".join(sorted(ctx.config.offer_sources)) or "none"
        raise HTTPException(422, f"unknown offer source {name!r} (configured: {known})")
    return name


def _destination(
    ctx: Context, offer_source: str, kind: str, mode: str
) -> tuple[str, str, str | None]:
    """A form's offer source, kind and duplicate mode, each checked (422 with what is known)."""
    kind = _kind(kind)
    return _offer_source(ctx, offer_source), kind, _mode(mode, kind)


def _inbox_name(name: str) -> str:
    """The sender's file name as the inbox will hold it; 422 when it cannot be made safe."""
    try:
        return delivery.inbox_name(name)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise HTTPException(422, f"unknown kind {kind!r} (expected one of: {', '.join(KINDS)})")
    return kind


def _mode(mode: str, kind: str) -> str | None:
    if not mode:
        return None
    if mode not in MODES:
        raise HTTPException(
            422, f"unknown duplicate mode {mode!r} (expected one of: {', '.join(MODES)})"
        )
    if kind != "conversions":
        raise HTTPException(422, "a duplicate mode applies to conversion files only")
    return mode


def _too_large(request: Request, limit: int) -> None:
    """Refuse before reading when the body alone says it is too large (a multipart body is a
    little larger than its file, so the exact check is the streamed one in ``delivery``)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise HTTPException(413, delivery.TooLarge(limit).args[0])


def _chunks(upload: UploadFile) -> Iterator[bytes]:
    while block := upload.file.read(_CHUNK):
        yield block


def _deliver(
    ctx: Context,
    user: Any,
    content_hash: str,
    chunks: Iterable[bytes],
    target: tuple[str, str, str | None, str],
) -> str:
    """Put a file into the inbox for the file-drop DAG, noting who sent it first (so the run
    records it); returns the upload's id, which the follow page watches. ``target`` is the
    offer source, kind, mode and name."""
    source, kind, mode, name = target
    layout = _layout(ctx)
    folder = delivery.inbox_folder(layout, source, kind, mode)
    upload_id = secrets.token_hex(16)
    with ctx.engine.begin() as conn:
        warehouse.expect_upload(
            conn,
            upload_id=upload_id,
            offer_source=source,
            kind=kind,
            original_name=name,
            content_hash=content_hash,
            uploaded_by=user.get_name(),
        )
    try:
        delivery.deliver(layout, chunks, folder, name)
    except BaseException:
        with ctx.engine.begin() as conn:
            warehouse.forget_upload(conn, upload_id)
        raise
    return upload_id


def _deliver_bytes(ctx: Context, user: Any, data: bytes, target) -> str:
    return _deliver(ctx, user, hashlib.sha256(data).hexdigest(), [data], target)


def _report_rows(ctx: Context, recorded: str | None, lines: set[int]) -> dict[int, str]:
    """The cells of some lines of a rejection report, as ``column = value`` text: what the
    person wrote on an example line (at most the report's first 5,000 rows are read)."""
    path = _inside_home(ctx, recorded)
    if path is None or not lines:
        return {}
    found: dict[int, str] = {}
    with open(path, encoding="utf-8-sig", newline="") as report:
        first = report.readline()
        delimiter = first[4:5] if first.startswith("line") else ","
        header = next(csv.reader([first], delimiter=delimiter))
        for number, cells in enumerate(csv.reader(report, delimiter=delimiter)):
            if number >= 5000 or len(found) == len(lines):
                break
            if cells and cells[0].isdigit() and int(cells[0]) in lines:
                shown = [
                    f"{name} = {value}"
                    for name, value in zip(header, cells, strict=False)
                    if name not in ("line", "original_line", "reason_code", "reason")
                ]
                found[int(cells[0])] = ", ".join(shown)
    return found


def _shown_result(ctx: Context, result) -> dict[str, Any]:
    """A result as the check page shows it: counts, top reasons with hints and the cells of an
    example line, the times line, the columns ignored or unmapped."""
    r = result.to_dict()
    reasons = sorted(r["reasons"].items(), key=lambda kv: (-kv[1], kv[0]))
    firsts = {r["examples"][code][0] for code, _ in reasons[:8] if r["examples"].get(code)}
    cells = _report_rows(ctx, r["report_path"], firsts)
    r["top_reasons"] = [
        {
            "code": code,
            "count": count,
            "lines": r["examples"].get(code, [])[:5],
            "example": cells.get((r["examples"].get(code) or [0])[0]),
            "message": CATALOGUE[code].message if code in CATALOGUE else "",
            "hint": CATALOGUE[code].hint if code in CATALOGUE else "",
        }
        for code, count in reasons[:8]
    ]
    r["file_reason"] = CATALOGUE.get(r["reason_code"]) if r["reason_code"] else None
    r["block"] = console.block(result, ctx.datadir.location)
    r["unmapped"] = r["reason_code"] == "unmapped_column"
    r["ignored_columns"] = [w for w in r["warnings"] if "column" in w]
    r["other_warnings"] = [w for w in r["warnings"] if "column" not in w]
    return r


def _bar(row: dict[str, Any]) -> list[dict[str, Any]]:
    total = sum(int(row.get(o) or 0) for o in OUTCOMES)
    return [
        {
            "outcome": o,
            "count": int(row.get(o) or 0),
            "percent": 100 * int(row.get(o) or 0) / total,
            "colour": _OUTCOME_COLOURS[o],
        }
        for o in OUTCOMES
        if total and row.get(o)
    ]


def _summary(ctx: Context, row: dict[str, Any]) -> dict[str, Any]:
    path = _inside_home(ctx, row.get("summary_path"))
    return (read_json(path) or {}) if path else {}


def _inside_home(ctx: Context, recorded: str | None) -> Path | None:
    """A path the ledger recorded, if it is a regular file inside the data directory."""
    if not recorded:
        return None
    home = _layout(ctx).home.resolve()
    path = Path(recorded)
    if not path.is_absolute():
        path = home / path
    if path.is_symlink():
        return None
    resolved = path.resolve()
    if not resolved.is_relative_to(home) or not resolved.is_file():
        return None
    return resolved


# --- pages ---------------------------------------------------------------------------------


@app.get("/", include_in_schema=False)
def home(request: Request, _: Reader) -> RedirectResponse:
    return RedirectResponse(_url(request, "uploads"), status_code=303)


@app.get("/upload", response_class=HTMLResponse)
def upload_form(request: Request, ctx: ContextDep, user: User, _: Reader):
    return _render(request, "upload.html", user, **_form_defaults(ctx))


@app.post("/check", response_class=HTMLResponse, dependencies=[Depends(access.same_origin)])
def check(
    request: Request,
    ctx: ContextDep,
    user: User,
    _: Writer,
    offer_source: Annotated[str, Form()],
    file: Annotated[UploadFile, File()],
    kind: Annotated[str, Form()] = "conversions",
    mode: Annotated[str, Form()] = "",
):
    """Check first: stage the bytes, dry-run them, show what a real run would do."""
    source, kind, chosen_mode = _destination(ctx, offer_source, kind, mode)
    limit = ctx.config.settings.max_file_bytes
    _too_large(request, limit)
    name = _inbox_name(file.filename or "")
    try:
        staged = delivery.stage(_layout(ctx), _chunks(file), limit)
    except delivery.TooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    result = ingest_file(
        ctx,
        Upload(
            path=staged.path,
            offer_source=source,
            kind=kind,
            name=name,
            mode_override=chosen_mode,
            dry_run=True,
            uploaded_by=user.get_name(),
        ),
    )
    return _render(
        request,
        "check.html",
        user,
        result=_shown_result(ctx, result),
        token=staged.token,
        name=name,
        offer_source=source,
        kind=kind,
        mode=chosen_mode or "",
        size=staged.size,
        seconds=result.timings.get("total_s"),
        bar=_bar(result.outcomes),
    )


@app.post("/apply", dependencies=[Depends(access.same_origin)])
def apply(
    request: Request,
    ctx: ContextDep,
    user: User,
    _: Writer,
    token: Annotated[str, Form()],
    offer_source: Annotated[str, Form()],
    name: Annotated[str, Form()],
    kind: Annotated[str, Form()] = "conversions",
    mode: Annotated[str, Form()] = "",
):
    """Send the checked bytes for real: into the inbox, for the file-drop DAG."""
    source, kind, chosen_mode = _destination(ctx, offer_source, kind, mode)
    name = _inbox_name(name)
    staged = delivery.staged(_layout(ctx), token)
    if staged is None:
        raise HTTPException(404, "that checked file is gone (applied already?): upload it again")
    try:
        upload_id = _deliver(
            ctx,
            user,
            sha256_file(staged),
            delivery.file_chunks(staged),
            (source, kind, chosen_mode, name),
        )
    except delivery.NameTaken as exc:
        raise HTTPException(409, f"{exc}; wait for it to be processed") from None
    delivery.discard(staged)
    return RedirectResponse(_url(request, f"follow/{upload_id}"), status_code=303)


@app.get("/add", response_class=HTMLResponse)
def add_form(request: Request, ctx: ContextDep, user: User, _: Reader):
    return _render(request, "add.html", user, **_form_defaults(ctx), text="", error=None)


@app.post("/add", dependencies=[Depends(access.same_origin)])
def add(
    request: Request,
    ctx: ContextDep,
    user: User,
    _: Writer,
    offer_source: Annotated[str, Form()],
    lines: Annotated[str, Form()],
):
    source = _offer_source(ctx, offer_source)
    return _typed_file(
        request,
        ctx,
        user,
        "add.html",
        lines,
        lambda: forms.added_conversions(lines),
        (source, "conversions", "added"),
    )


@app.get("/status", response_class=HTMLResponse)
def status_form(request: Request, ctx: ContextDep, user: User, _: Reader):
    return _render(request, "status.html", user, **_form_defaults(ctx), text="", error=None)


@app.post("/status", dependencies=[Depends(access.same_origin)])
def status(
    request: Request,
    ctx: ContextDep,
    user: User,
    _: Writer,
    offer_source: Annotated[str, Form()],
    lines: Annotated[str, Form()],
    status: Annotated[str, Form()],
):
    source = _offer_source(ctx, offer_source)
    if status not in STATUSES:
        raise HTTPException(422, f"unknown status {status!r} (one of: {', '.join(STATUSES)})")
    return _typed_file(
        request,
        ctx,
        user,
        "status.html",
        lines,
        lambda: forms.status_updates(lines, status),
        (source, "status", f"status-{status}"),
    )


def _typed_file(
    request: Request,
    ctx: Context,
    user: Any,
    template: str,
    lines: str,
    make: Callable[[], bytes],
    target: tuple[str, str, str],
):
    """Lines typed into a form -> a CSV file in the inbox, followed like an upload; a line the
    form cannot read shows the form again with the text kept and the reason (422)."""
    source, kind, what = target
    try:
        data = make()
    except forms.FormError as exc:
        return _render(
            request, template, user, 422, **_form_defaults(ctx), text=lines, error=str(exc)
        )
    upload_id = _deliver_bytes(ctx, user, data, (source, kind, None, _typed_name(what, user)))
    return RedirectResponse(_url(request, f"follow/{upload_id}"), status_code=303)


def _typed_name(what: str, user: Any) -> str:
    """The inbox name of a file typed into the page: what, who, when (UTC), all safe."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return delivery.inbox_name(f"{what}-{user.get_name()}-{stamp}.csv")


@app.get("/template", response_class=HTMLResponse)
def template_page(request: Request, ctx: ContextDep, user: User, _: Reader):
    sources = []
    for name in sorted(ctx.config.offer_sources):
        source = ctx.config.offer_sources[name]
        sources.append({"name": name, "notes": export.template_notes(source, "conversions")})
    return _render(request, "template.html", user, sources=sources, kinds=KINDS)


@app.get("/template.csv")
def template_csv(ctx: ContextDep, _: Reader, offer_source: str, kind: str = "conversions"):
    source = ctx.config.offer_sources[_offer_source(ctx, offer_source)]
    body = export.template_for(source, _kind(kind))
    filename = f"{offer_source}-{kind}-template.csv"
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@app.get("/follow/{upload_id}", response_class=HTMLResponse)
def follow(request: Request, ctx: ContextDep, user: User, _: Reader, upload_id: str):
    found = _upload(ctx, upload_id)
    return _render(request, "follow.html", user, upload=found, upload_id=upload_id)


@app.get("/api/follow/{upload_id}")
def follow_state(ctx: ContextDep, _: Reader, upload_id: str) -> JSONResponse:
    """Where an upload is: waiting in the inbox, being processed, or recorded (with its row)."""
    found = _upload(ctx, upload_id)
    if found["file_id"] is None:
        waiting = _still_waiting(ctx, found)
        return JSONResponse(
            {
                "where": "waiting" if waiting else "processing",
                "words": (
                    "waiting in the inbox for the conversions_file_drop DAG"
                    if waiting
                    else "the conversions_file_drop DAG is processing it"
                ),
            }
        )
    with ctx.engine.connect() as conn:
        row = warehouse.file_row(conn, found["file_id"])
    return JSONResponse(
        {
            "where": "recorded",
            "file_id": found["file_id"],
            "state": row["state"],
            "words": STATE_WORDS.get(row["state"], row["state"]),
            "outcomes": {o: row[o] for o in OUTCOMES},
        }
    )


def _upload(ctx: Context, upload_id: str) -> dict[str, Any]:
    if len(upload_id) != 32 or not all(c in "0123456789abcdef" for c in upload_id):
        raise HTTPException(404, "no such upload")
    with ctx.engine.connect() as conn:
        found = warehouse.upload(conn, upload_id)
    if found is None:
        raise HTTPException(404, "no such upload")
    return found


def _still_waiting(ctx: Context, found: dict[str, Any]) -> bool:
    folder = _layout(ctx).inbox / found["offer_source"]
    candidates = [folder / found["original_name"], folder / "status" / found["original_name"]]
    candidates += [folder / mode / found["original_name"] for mode in MODES]
    return any(p.exists() for p in candidates)


@app.get("/uploads", response_class=HTMLResponse)
def uploads(
    request: Request,
    ctx: ContextDep,
    user: User,
    _: Reader,
    offer_source: str = "",
    state: str = "",
    day: str = "",
):
    start = end = None
    if day:
        try:
            start = datetime.fromisoformat(day).replace(tzinfo=UTC)
        except ValueError:
            raise HTTPException(422, f"not a date: {day!r} (write it as 2026-12-03)") from None
        end = start + timedelta(days=1)
    if state and state not in LEDGER_STATES:
        raise HTTPException(422, f"unknown state {state!r} (one of: {', '.join(LEDGER_STATES)})")
    with ctx.engine.connect() as conn:
        rows = warehouse.recent_files(
            conn,
            offer_source=offer_source or None,
            state=state or None,
            day_start=start,
            day_end=end,
        )
    shown = []
    for row in rows:
        summary = _summary(ctx, row)
        reasons = sorted((summary.get("reasons") or {}).items(), key=lambda kv: -kv[1])
        shown.append(
            row
            | {
                "bar": _bar(row),
                "reasons": reasons[:3],
                "has_report": bool(row.get("rejected")) and _inside_home(ctx, row["report_path"]),
                "has_summary": bool(_inside_home(ctx, row["summary_path"])),
            }
        )
    return _render(
        request,
        "uploads.html",
        user,
        rows=shown,
        offer_sources=sorted(ctx.config.offer_sources),
        states=LEDGER_STATES,
        chosen={"offer_source": offer_source, "state": state, "day": day},
        colours=_OUTCOME_COLOURS,
        outcome_words=console.OUTCOME_WORDS,
        state_words=STATE_WORDS,
        catalogue=CATALOGUE,
    )


@app.get("/uploads/{file_id}", response_class=HTMLResponse)
def upload_detail(request: Request, ctx: ContextDep, user: User, _: Reader, file_id: int):
    with ctx.engine.connect() as conn:
        row = warehouse.file_row(conn, file_id)
        if row is None:
            raise HTTPException(404, f"no upload {file_id}")
        history = [_change(h) for h in warehouse.history(conn, file_id)]
    summary = _summary(ctx, row)
    return _render(
        request,
        "detail.html",
        user,
        row=row,
        bar=_bar(row),
        summary=summary,
        history=history,
        has_report=bool(row.get("rejected")) and _inside_home(ctx, row["report_path"]),
        has_summary=bool(_inside_home(ctx, row["summary_path"])),
        colours=_OUTCOME_COLOURS,
        outcome_words=console.OUTCOME_WORDS,
        state_words=STATE_WORDS,
        catalogue=CATALOGUE,
    )


_FIELD_WORDS = {
    "payout": "payout",
    "status": "status",
    "converted_at": "time (UTC)",
    "currency": "currency",
    "event_id": "event id",
}


def _change(h: dict[str, Any]) -> dict[str, Any]:
    """One history row as the detail page shows it: each field it set, before and after."""

    def shown(field: str, value: Any) -> str:
        if value is None:
            return "—"
        if field == "payout":
            return money.format_micros(int(value))
        if field == "converted_at":
            return value.strftime("%Y-%m-%d %H:%M:%S")
        return str(value)

    changes = [
        {"field": words, "old": shown(f, h[f"old_{f}"]), "new": shown(f, h[f"new_{f}"])}
        for f, words in _FIELD_WORDS.items()
        if h[f"new_{f}"] is not None
    ]
    return h | {"changes": changes or [{"field": "—", "old": "—", "new": "—"}]}


@app.get("/uploads/{file_id}/{what}")
def download(ctx: ContextDep, _: Reader, file_id: int, what: str) -> FileResponse:
    """A file's rejection report, summary or duplicates list; only a regular file inside the
    data directory, whatever the ledger says."""
    columns = {"report": "report_path", "summary": "summary_path"}
    if what not in (*columns, "duplicates"):
        raise HTTPException(404, "no such download")
    with ctx.engine.connect() as conn:
        row = warehouse.file_row(conn, file_id)
    if row is None:
        raise HTTPException(404, f"no upload {file_id}")
    if what == "duplicates":
        recorded = _summary(ctx, row).get("duplicates_path")
    else:
        recorded = row[columns[what]]
    path = _inside_home(ctx, recorded)
    if path is None:
        raise HTTPException(404, f"upload {file_id} has no {what} in the data directory")
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media, filename=os.path.basename(path))
