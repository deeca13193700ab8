"""An object-storage data directory's spool goes when it is closed: a claim handed to another
process (Airflow's `claim_files` hands every claim to a mapped task) is never filed by the
process that took it, so without `close` its local copy stayed on that machine's disk for good
(seen: 40 copies in /tmp after the Celery end-to-end test's claim_files task)."""

from __future__ import annotations

import boto3

from pipeline.datadir.objectstore import ObjectStoreDataDir


def test_close_removes_the_copies_of_claims_handed_on(s3_home, engine):
    bucket, prefix = s3_home.removeprefix("s3://").split("/", 1)
    boto3.client("s3").put_object(
        Bucket=bucket, Key=f"{prefix}/inbox/maxbounty/a.csv", Body=b"click_id,payout\nm1,1.00\n"
    )
    claimer = ObjectStoreDataDir(s3_home, engine)
    [waiting] = claimer.scan({"maxbounty"})
    claimed = claimer.claim(waiting)
    assert claimed is not None and claimed.path.read_bytes().startswith(b"click_id")

    claimer.close()  # the claiming process ends; the claim lives on in the warehouse
    assert not claimed.path.exists()
    assert not claimed.path.parent.parent.exists()  # the spool folder itself

    taker = ObjectStoreDataDir(s3_home, engine)  # the process the claim was handed to
    taken = taker.take_over(claimed.claim_id)
    assert taken is not None and taken.path.read_bytes() == b"click_id,payout\nm1,1.00\n"
    taker.close()
    assert not taken.path.exists()


def test_a_claim_handed_on_is_downloaded_only_by_the_process_that_takes_it(s3_home, engine):
    """Airflow's `claim_files` claims for the mapped tasks (``hand_off``): it checks that the
    object is still the one listed and downloads nothing; the task's `take_over` downloads
    it, once. (Before, `claim_files` downloaded every object of a pass before any task could
    start, and each task downloaded its object again.)"""
    from datetime import timedelta

    bucket, prefix = s3_home.removeprefix("s3://").split("/", 1)
    s3 = boto3.client("s3")
    body = b"click_id,payout\nm1,1.00\n"
    for name in ("a.csv", "b.csv"):
        s3.put_object(Bucket=bucket, Key=f"{prefix}/inbox/maxbounty/{name}", Body=body)
    claimer = ObjectStoreDataDir(s3_home, engine)
    waiting = {w.relative: w for w in claimer.scan({"maxbounty"})}
    s3.put_object(  # b.csv is replaced after the scan: another identity, not this claim's
        Bucket=bucket, Key=f"{prefix}/inbox/maxbounty/b.csv", Body=body + b"m2,2.00\n"
    )
    claimed = claimer.claim(waiting["maxbounty/a.csv"], hand_off=timedelta(hours=1))
    assert claimed is not None and not claimed.path.exists()  # nothing downloaded
    assert claimer.claim(waiting["maxbounty/b.csv"], hand_off=timedelta(hours=1)) is None
    claimer.close()

    taker = ObjectStoreDataDir(s3_home, engine)
    taken = taker.take_over(claimed.claim_id)
    assert taken is not None and taken.path.read_bytes() == body
    taker.close()
