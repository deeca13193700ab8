"""The inbox runner on an object-storage data directory: a real S3 API (moto's server on
loopback) and a real warehouse (SQLite and PostgreSQL), whose ``inbox_claims`` holds the claims.

The same pass as `test_runner`'s first test, read back from the bucket with boto3 (not through
the code under test): what is applied, archived, quarantined, reported, and that nothing is left
claimed. Expectations are worked out by hand from the files written here, as there.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
from datetime import UTC, date, datetime, timedelta

import boto3
import pytest
from sqlalchemy import select

from pipeline import export, runner, runtime, warehouse
from pipeline.airflow import steps
from pipeline.cli import main
from pipeline.config import load
from pipeline.context import Context
from pipeline.core.model import ConfigError
from pipeline.datadir.objectstore import ObjectStoreDataDir
from tests.helpers import make_config, sample_config

MAXBOUNTY = (
    "click_id,payout,conversion_time\n"
    "m1,5.00,2026-07-01 14:00:00\n"  # 18:00Z (New York, GMT-4 in July)
    "m2,x,2026-07-01 15:00:00\n"  # line 3: invalid payout
)
CLICKBANK = "click_id,payout,conversion_time\nc1,7.25,2026-07-01 10:00:00\n"  # a UTC file
STATUS = "click_id,status\nm1,declined\n"


@pytest.fixture
def ctx(s3_home, engine) -> Context:
    return Context(make_config(), engine, ObjectStoreDataDir(s3_home, engine))


def bucket_of(ctx: Context) -> tuple[str, str]:
    bucket, prefix = ctx.datadir.base.split("/", 1)
    return bucket, prefix


def put(ctx: Context, relative: str, content: str | bytes) -> None:
    bucket, prefix = bucket_of(ctx)
    data = content.encode() if isinstance(content, str) else content
    boto3.client("s3").put_object(Bucket=bucket, Key=f"{prefix}/inbox/{relative}", Body=data)


def objects(ctx: Context, folder: str) -> dict[str, bytes]:
    """Every object under ``<prefix>/<folder>/``, by its key below that, with its bytes."""
    bucket, prefix = bucket_of(ctx)
    s3 = boto3.client("s3")
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{prefix}/{folder}/"
    ):
        for item in page.get("Contents", []):
            key = item["Key"]
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            found[key[len(f"{prefix}/{folder}/") :]] = body
    return found


def claim_rows(ctx: Context) -> list[dict]:
    with ctx.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(warehouse.schema.inbox_claims)).mappings()]


def sha256(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def test_a_pass_applies_archives_and_reports_in_the_bucket(ctx):
    put(ctx, "maxbounty/a.csv", MAXBOUNTY)
    put(ctx, "maxbounty/status/s.csv", STATUS)
    put(ctx, "clickbank/c.csv", CLICKBANK)
    put(ctx, "nosuch/x.csv", CLICKBANK)  # no such offer source: quarantined, nothing applied
    results = runner.run_inbox(ctx)

    assert [(r.offer_source, r.name, r.state) for r in results] == [
        (None, "x.csv", "quarantined"),
        ("clickbank", "c.csv", "applied"),
        ("maxbounty", "a.csv", "applied"),
        ("maxbounty", "s.csv", "applied"),
    ]
    data = export.frame(ctx.engine, ctx.config)
    assert sorted(
        (r.offer_source, r.click_id, r.status, r.payout, r.converted_at) for r in data.itertuples()
    ) == [
        ("clickbank", "c1", "approved", "7.25", "2026-07-01T10:00:00Z"),
        ("maxbounty", "m1", "declined", "5.00", "2026-07-01T18:00:00Z"),
    ]
    assert objects(ctx, "inbox") == {}
    assert claim_rows(ctx) == []  # every claim ended with its file's filing
    day = results[1].received_at[:10]
    archive = objects(ctx, "archive")
    assert sorted(archive) == sorted(
        [
            f"{day}/clickbank/conversions/{sha256(CLICKBANK)[:16]}_c.csv",
            f"{day}/clickbank/conversions/{sha256(CLICKBANK)[:16]}_c.csv.json",
            f"{day}/maxbounty/conversions/{sha256(MAXBOUNTY)[:16]}_a.csv",
            f"{day}/maxbounty/conversions/{sha256(MAXBOUNTY)[:16]}_a.csv.json",
            f"{day}/maxbounty/status/{sha256(STATUS)[:16]}_s.csv",
            f"{day}/maxbounty/status/{sha256(STATUS)[:16]}_s.csv.json",
        ]
    )
    assert archive[f"{day}/maxbounty/conversions/{sha256(MAXBOUNTY)[:16]}_a.csv"] == (
        MAXBOUNTY.encode()
    )
    sidecar = json.loads(
        archive[f"{day}/maxbounty/conversions/{sha256(MAXBOUNTY)[:16]}_a.csv.json"]
    )
    assert (sidecar["relative"], sidecar["content_hash"]) == ("maxbounty/a.csv", sha256(MAXBOUNTY))
    assert sidecar["received_at"] == results[2].received_at
    quarantine = objects(ctx, "quarantine")
    [reason_key] = [k for k in quarantine if k.endswith(".reason.json")]
    assert reason_key.startswith(f"{day}/_unknown/")
    assert json.loads(quarantine[reason_key])["code"] == "unknown_offer_source"
    assert quarantine[reason_key.removesuffix(".reason.json")] == CLICKBANK.encode()

    # The rejection report of a.csv is in the bucket, with line 3 and its reason.
    reports = objects(ctx, "reports")
    a_report = results[2].report_path
    assert a_report.startswith(f"{ctx.datadir.location}/reports/{day}/a.")
    rows = list(
        csv.reader(io.StringIO(reports[a_report.split("/reports/", 1)[1]].decode("utf-8-sig")))
    )
    assert [row[:3] for row in rows[1:]] == [["3", "m2", "x"]]  # line, then its cells
    summary = json.loads(reports[results[2].summary_path.split("/reports/", 1)[1]])
    assert (summary["state"], summary["outcomes"]["rejected"]) == ("applied", 1)
    assert not [k for k in [*archive, *reports, *quarantine] if k.endswith(".partial")]
    # The ledger names the reports where they are.
    with ctx.engine.connect() as conn:
        paths = conn.execute(select(warehouse.ingested_files.c.summary_path)).scalars().all()
    assert all(p.startswith(f"{ctx.datadir.location}/reports/") for p in paths)


def test_the_same_bytes_dropped_again_are_a_duplicate_and_a_new_upload_is_a_new_file(ctx):
    put(ctx, "clickbank/c.csv", CLICKBANK)
    [first] = runner.run_inbox(ctx)
    put(ctx, "clickbank/c.csv", CLICKBANK)  # the same key, the same bytes: an identity again
    [again] = runner.run_inbox(ctx)
    changed = CLICKBANK.replace("7.25", "8.50")
    put(ctx, "clickbank/c.csv", changed)  # the same key, new bytes: applied (edit mode)
    [third] = runner.run_inbox(ctx)
    assert (first.state, again.state, third.state) == ("applied", "duplicate_file", "applied")
    data = export.frame(ctx.engine, ctx.config)
    assert [(r.click_id, r.payout) for r in data.itertuples()] == [("c1", "8.50")]
    assert objects(ctx, "inbox") == {} and claim_rows(ctx) == []


def test_a_warehouse_failure_puts_the_file_back_with_its_received_time(ctx, monkeypatch):
    put(ctx, "clickbank/c.csv", CLICKBANK)
    real = runner.ingest_file

    def down(*args, **kwargs):
        raise warehouse.WarehouseError("the warehouse is down (test)")

    monkeypatch.setattr(runner, "ingest_file", down)
    [failed] = runner.run_inbox(ctx)
    assert failed.state == "failed" and "put back in the inbox" in failed.detail
    assert list(objects(ctx, "inbox")) == ["clickbank/c.csv"]  # never left it
    [returned] = claim_rows(ctx)
    assert returned["state"] == "returned"
    monkeypatch.setattr(runner, "ingest_file", real)
    [applied] = runner.run_inbox(ctx)
    assert applied.state == "applied"
    assert applied.received_at == returned["received_at"].astimezone(UTC).isoformat()
    assert objects(ctx, "inbox") == {} and claim_rows(ctx) == []


def test_a_sender_replacing_a_returned_file_makes_it_received_anew(ctx, monkeypatch):
    put(ctx, "clickbank/c.csv", CLICKBANK)
    monkeypatch.setattr(
        runner, "ingest_file", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full (test)"))
    )
    runner.run_inbox(ctx)
    monkeypatch.undo()
    put(ctx, "clickbank/c.csv", CLICKBANK.replace("7.25", "9.00"))
    before = datetime.now(UTC).replace(microsecond=0)
    [applied] = runner.run_inbox(ctx)
    assert applied.state == "applied"
    assert datetime.fromisoformat(applied.received_at) >= before  # not the old claim's time
    assert claim_rows(ctx) == []  # the old bytes' returned row went with them


def test_hostile_keys_are_quarantined_or_left_and_nothing_is_lost(ctx, caplog):
    """What a sender can put in a bucket that no folder holds: keys with ``..`` or an empty
    segment, a "folder" marker, and the usual strays. Every object ends up applied, quarantined
    or still in the inbox, untouched (an unsafe key: a warning names it): none disappears."""
    dropped = {
        "maxbounty/../escape.csv": CLICKBANK,  # S3 keeps ".." as two characters of a key
        "maxbounty//double.csv": CLICKBANK,
        "maxbounty/": b"",  # a console's "create folder"
        "maxbounty/.hidden.csv": CLICKBANK,  # hidden: ignored, as on a disk
        "maxbounty/upload.csv.partial": CLICKBANK,  # still uploading: ignored
        "maxbounty/claim.json": CLICKBANK,  # the local backend's record name: only a name here
        "maxbounty/empty.csv": b"",
        "clickbank/ünï cödé.csv": CLICKBANK,
        "stray.csv": CLICKBANK,  # at the inbox root
    }
    for key, content in dropped.items():
        put(ctx, key, content)
    results = {r.name: r.state for r in runner.run_inbox(ctx)}
    assert results == {
        "claim.json": "applied",  # the local backend's record name: here only a name
        "empty.csv": "quarantined",
        "ünï cödé.csv": "applied",
        "stray.csv": "quarantined",
    }
    left = sorted(objects(ctx, "inbox"))
    assert left == sorted(
        [
            "maxbounty/../escape.csv",
            "maxbounty//double.csv",
            "maxbounty/",
            "maxbounty/.hidden.csv",
            "maxbounty/upload.csv.partial",
        ]
    )
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    # (s3fs's listing leaves a key with a ".." segment out altogether: untouched, not named)
    assert "maxbounty//double.csv" in warned and "maxbounty/'" in warned
    filed = [k for k in objects(ctx, "quarantine") if not k.endswith(".reason.json")]
    assert sorted(k.rsplit("_", 1)[-1] for k in filed) == ["empty.csv", "stray.csv"]
    assert claim_rows(ctx) == []


def test_an_airflow_connection_in_the_url_gives_the_credentials(
    s3_home, moto_endpoint, engine, monkeypatch
):
    """Inside Airflow: ``s3://<conn_id>@bucket/prefix`` goes through ObjectStoragePath and the
    connection (here from ``AIRFLOW_CONN_<ID>``), with no AWS variable in the environment."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    extra = {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}
    connection = {"conn_type": "aws", "login": "test", "password": "test", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_MOTO_TEST", json.dumps(connection))
    url = s3_home.replace("s3://", "s3://moto_test@")
    ctx = Context(make_config(), engine, ObjectStoreDataDir(url, engine))
    bucket, prefix = bucket_of(ctx)
    s3 = boto3.client(
        "s3", endpoint_url=moto_endpoint, aws_access_key_id="t", aws_secret_access_key="t"
    )
    s3.put_object(Bucket=bucket, Key=f"{prefix}/inbox/clickbank/c.csv", Body=CLICKBANK.encode())
    [result] = runner.run_inbox(ctx)
    assert result.state == "applied"
    assert result.summary_path.startswith(f"{url}/reports/")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")["Contents"]
    keys = sorted(item["Key"][len(prefix) + 1 :].split("/", 2)[0] for item in listed)
    # the file and its sidecar; its reports; the inbox empty
    assert keys.count("archive") == 2 and set(keys) == {"archive", "reports"}


def test_credentials_in_the_url_are_refused(engine):
    with pytest.raises(ValueError, match="credentials do not go in the data directory URL"):
        ObjectStoreDataDir("s3://AKIAEXAMPLE:secret@bucket/prefix", engine)


# --- replays from the archive in the bucket ------------------------------------------------------


def archived_once(ctx: Context) -> tuple[list, str]:
    """maxbounty/a.csv applied and archived in the bucket; (its results, its archive key)."""
    put(ctx, "maxbounty/a.csv", MAXBOUNTY)
    results = runner.run_inbox(ctx)
    [key] = [k for k in objects(ctx, "archive") if k.endswith("_a.csv")]
    return results, key


def spool_left(ctx: Context) -> list:
    return [p for p in ctx.datadir._spool.rglob("*") if p.is_file()]


def test_a_replay_reads_the_archived_object_from_the_bucket(ctx, tmp_path):
    """`conversions_replay`'s task bodies: the archived original is found, streamed to a local
    copy and applied, into a fresh warehouse here, so the result must equal the first run's
    (hand-worked: m1 inserted, line 3 rejected); its reports go to reports/replays/<run id>/."""
    [first], key = archived_once(ctx)
    fresh = warehouse.connect(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        other = Context(ctx.config, fresh, ObjectStoreDataDir(ctx.datadir.location, fresh))
        [ticket] = steps.archived_tickets(other, date(2000, 1, 1), date(2099, 1, 1), "maxbounty")
        assert ticket["path"] == f"{ctx.datadir.location}/archive/{key}"
        assert (ticket["file"], ticket["received_at"]) == ("maxbounty/a.csv", first.received_at)

        result = steps.replay(
            other, ticket, run_id="manual__2026-12-03T10:00:00+00:00", dry_run=False
        )

        assert (
            result["state"],
            result["outcomes"]["inserted"],
            result["outcomes"]["rejected"],
        ) == (
            "applied",
            1,
            1,
        )
        assert result["content_hash"] == sha256(MAXBOUNTY)
        data = export.frame(fresh, ctx.config)
        assert [(r.click_id, r.payout, r.converted_at) for r in data.itertuples()] == [
            ("m1", "5.00", "2026-07-01T18:00:00Z")
        ]
        assert result["report_path"].startswith(
            f"{ctx.datadir.location}/reports/replays/manual__2026-12-03T10_00_00_00_00/"
        )
        assert objects(ctx, "archive")[key] == MAXBOUNTY.encode()  # the original stays
        assert spool_left(other) == []  # the local copy is gone
        with pytest.raises(ValueError, match="not an archived file"):
            steps.replay(
                other, ticket | {"path": f"{ctx.datadir.location}/inbox/x.csv"}, run_id="r"
            )
    finally:
        fresh.dispose()


def test_the_cli_ingests_an_archived_object_by_its_url(ctx, tmp_path, warehouse_url):
    """`conversions ingest --force s3://.../archive/...`: the CLI's replay of one file."""
    _, key = archived_once(ctx)
    config = tmp_path / "conversions.toml"
    config.write_text(sample_config("every_mode.toml"), encoding="utf-8")
    url = f"{ctx.datadir.location}/archive/{key}"
    common = ["--config", str(config), "--home", ctx.datadir.location, "--warehouse", warehouse_url]

    assert main(["ingest", "--offer-source", "maxbounty", *common, url]) == 0  # a duplicate
    assert main(["ingest", "--offer-source", "maxbounty", "--force", *common, url]) == 0
    assert main(["ingest", "--offer-source", "maxbounty", *common, url + ".missing"]) == 1

    f = warehouse.ingested_files.c
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(
                f.state, f.content_hash, f.data_lines, f.inserted, f.ignored_duplicate, f.rejected
            ).order_by(f.file_id)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("applied", sha256(MAXBOUNTY), 2, 1, 0, 1),  # the inbox run
        ("duplicate_file", sha256(MAXBOUNTY), 0, 0, 0, 0),  # the same bytes again, no --force
        ("applied", sha256(MAXBOUNTY), 2, 0, 1, 1),  # forced: m1 is there (ignore mode)
    ]
    assert objects(ctx, "archive")[key] == MAXBOUNTY.encode()


# --- the home in the config file -----------------------------------------------------------------


def config_text(home: str | None) -> str:
    first = f"home = {json.dumps(home)}\n" if home is not None else ""
    return first + sample_config("every_mode.toml")


@pytest.mark.parametrize(
    ("home", "reason"),
    [
        ("ftp://host/x", "unsupported data directory scheme ftp://"),
        ("s4://bucket/x", "unsupported data directory scheme s4://"),
        ("s3:///prefix", "no bucket in 's3:///prefix'"),
        ("s3://key:secret@bucket/x", "credentials do not go in the data directory URL"),
        ("", "must be a folder or an s3://bucket/prefix URL"),
    ],
)
def test_a_home_that_cannot_work_is_refused_with_the_file_and_key(tmp_path, home, reason):
    path = tmp_path / "conversions.toml"
    path.write_text(config_text(home), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert (caught.value.path, caught.value.key) == (str(path), "home")
    assert reason in caught.value.reason


def test_conversions_home_and_home_win_over_the_configs_home(tmp_path, monkeypatch):
    path = tmp_path / "cfg" / "conversions.toml"
    path.parent.mkdir()
    path.write_text(config_text("s3://from-config/prefix"), encoding="utf-8")
    config = load(path)
    assert config.home == "s3://from-config/prefix"
    monkeypatch.delenv("CONVERSIONS_HOME", raising=False)
    assert runtime.resolve_home(None, config=config) == "s3://from-config/prefix"
    monkeypatch.setenv("CONVERSIONS_HOME", "s3://from-env/p")
    assert runtime.resolve_home(None, config=config) == "s3://from-env/p"
    assert runtime.resolve_home(str(tmp_path / "flag"), config=config) == tmp_path / "flag"
    monkeypatch.setenv("CONVERSIONS_HOME", "gopher://x/y")  # checked wherever it comes from
    with pytest.raises(ConfigError, match=r"\$CONVERSIONS_HOME: unsupported .* gopher://"):
        runtime.resolve_home(None, config=config)
    monkeypatch.delenv("CONVERSIONS_HOME")
    path.write_text(config_text("data"), encoding="utf-8")  # a folder: relative to the file
    assert runtime.resolve_home(None, config=load(path)) == tmp_path / "cfg" / "data"


def test_the_cli_runs_on_the_configs_s3_home_and_says_a_missing_bucket(
    ctx, tmp_path, warehouse_url, monkeypatch, capsys
):
    monkeypatch.delenv("CONVERSIONS_HOME", raising=False)
    put(ctx, "maxbounty/a.csv", MAXBOUNTY)
    path = tmp_path / "conversions.toml"
    path.write_text(config_text(ctx.datadir.location), encoding="utf-8")

    assert main(["inbox", "--config", str(path), "--warehouse", warehouse_url]) == 0

    assert objects(ctx, "inbox") == {}
    assert [k for k in objects(ctx, "archive") if k.endswith("_a.csv")]
    missing = "s3://no-such-bucket-" + uuid.uuid4().hex[:8] + "/home"
    path.write_text(config_text(missing), encoding="utf-8")
    capsys.readouterr()
    assert main(["inbox", "--config", str(path), "--warehouse", warehouse_url]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: no such bucket 'no-such-bucket-" in err, err
    assert "Traceback" not in err


# --- the inbox delete never removes a newer upload -----------------------------------------------


def test_an_upload_landing_just_before_the_inbox_delete_is_kept_and_applied_next(ctx, monkeypatch):
    """The sender uploads new bytes under the claimed key at the last moment: after the
    archive copy and any check, as the delete request goes out (a real PUT, made by a hook
    on the store's delete calls). The delete must not remove them: the new upload stays in
    the inbox and the next pass applies it. A check-then-delete fails this test (the new
    upload is deleted unseen: a file lost)."""
    newer = MAXBOUNTY.replace("5.00", "6.00")
    put(ctx, "maxbounty/a.csv", MAXBOUNTY)
    fs, sent = ctx.datadir.fs, []

    def sender_first(real):
        def call(*args, **kwargs):
            if not sent and "/inbox/" in f"{args} {kwargs}":  # the inbox object's delete
                sent.append(True)
                put(ctx, "maxbounty/a.csv", newer)
            return real(*args, **kwargs)

        return call

    real_call_s3 = fs.call_s3

    def call_s3(method, *args, **kwargs):
        if method == "delete_object":
            return sender_first(real_call_s3)(method, *args, **kwargs)
        return real_call_s3(method, *args, **kwargs)

    monkeypatch.setattr(fs, "rm", sender_first(fs.rm))
    monkeypatch.setattr(fs, "rm_file", sender_first(fs.rm_file))
    monkeypatch.setattr(fs, "call_s3", call_s3)
    [first] = runner.run_inbox(ctx)
    monkeypatch.undo()

    assert sent == [True]  # the upload did land in the window
    assert first.state == "applied"
    assert objects(ctx, "inbox") == {"maxbounty/a.csv": newer.encode()}
    assert claim_rows(ctx) == []
    [second] = runner.run_inbox(ctx)
    assert (second.state, second.content_hash) == ("applied", sha256(newer))
    assert objects(ctx, "inbox") == {}
    archived = {k: v for k, v in objects(ctx, "archive").items() if not k.endswith(".json")}
    assert sorted(archived.values()) == sorted([MAXBOUNTY.encode(), newer.encode()])


def test_an_upload_landing_just_before_the_archive_copy_is_not_archived_as_the_claimed_file(
    ctx, monkeypatch
):
    """The sender's new upload lands just before the archive's server-side copy. The copy is
    conditional on the claimed ETag, but not every store honours that (moto ignores
    ``x-amz-copy-source-if-match``): the archive must still hold the claimed bytes under
    their hash's name (found so: it held the new ones), and the new upload stays waiting."""
    newer = MAXBOUNTY.replace("5.00", "6.00")
    put(ctx, "maxbounty/a.csv", MAXBOUNTY)
    fs, sent = ctx.datadir.fs, []
    real_cp_file = fs.cp_file

    def cp_file(*args, **kwargs):
        if not sent:
            sent.append(True)
            put(ctx, "maxbounty/a.csv", newer)
        return real_cp_file(*args, **kwargs)

    monkeypatch.setattr(fs, "cp_file", cp_file)
    [first] = runner.run_inbox(ctx)
    monkeypatch.undo()

    assert sent == [True] and first.state == "applied"
    archived = {k: v for k, v in objects(ctx, "archive").items() if not k.endswith(".json")}
    assert list(archived.values()) == [MAXBOUNTY.encode()]
    assert next(iter(archived)).endswith(f"/{sha256(MAXBOUNTY)[:16]}_a.csv")
    assert objects(ctx, "inbox") == {"maxbounty/a.csv": newer.encode()}
    [second] = runner.run_inbox(ctx)
    assert (second.state, second.content_hash) == ("applied", sha256(newer))


def test_a_renewal_extends_a_lease_never_shortens_a_hand_off_and_says_what_was_adopted(ctx):
    """`claims.renew` by hand: a 1-hour lease renewed for 2 hours is later; a claim handed off
    for 3 hours keeps its longer lease; a claim another process adopted is not renewed and
    is reported missing (lease_until compared as the warehouse returns it)."""
    from pipeline.warehouse import claims as claim_table

    def row(relative: str, hand_off: timedelta | None = None) -> claim_table.ClaimRow:
        got = claim_table.take(
            ctx.engine,
            store="s3://renewal-test/home",
            object_key=relative,
            etag="e" * 32,
            size=1,
            offer_source="maxbounty",
            kind="conversions",
            mode=None,
            received_at=datetime(2026, 7, 1, tzinfo=UTC),
            lease=timedelta(hours=1),
            hand_off=hand_off,
        )
        assert got is not None
        return got

    plain, handed = row("maxbounty/a.csv"), row("maxbounty/b.csv", timedelta(hours=3))
    adopted = row("maxbounty/c.csv")
    newer = claim_table.adopt(ctx.engine, adopted, timedelta(hours=1))
    assert newer is not None

    owned = claim_table.renew(
        ctx.engine, {plain.claim_id, handed.claim_id, adopted.claim_id}, timedelta(hours=2)
    )

    assert owned == {plain.claim_id, handed.claim_id}  # c.csv's id is another's now
    after = {r: claim_table.get(ctx.engine, r.claim_id) for r in (plain, handed)}
    assert after[plain].lease_until - plain.lease_until >= timedelta(minutes=59)
    assert after[handed].lease_until == handed.lease_until  # 3 hours > now + 2 hours
    assert claim_table.get(ctx.engine, newer.claim_id).lease_until == newer.lease_until
