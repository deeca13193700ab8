"""A bucket (and its notification queue) on moto's server for the Airflow end-to-end tests, and
the reads that check it with boto3, not through the code under test.

The deployment reaches the store through the Airflow connection ``aws_default`` (the README's
form, ``CONVERSIONS_HOME=s3://aws_default@bucket/prefix``), given by ``AIRFLOW_CONN_AWS_DEFAULT``
with moto's endpoint in its extra; the Airflow processes get no AWS_* variable, so it is the
connection that works or nothing. The test process itself reads the bucket with the AWS
environment the session's ``moto_endpoint`` fixture set.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import boto3

REGION = "us-east-1"
CONN_ID = "aws_default"


@dataclass
class Bucket:
    """One fresh bucket on the moto server, the data directory under ``prefix``."""

    endpoint: str
    name: str
    prefix: str = "conversions"

    @classmethod
    def create(cls, endpoint: str) -> Bucket:
        bucket = cls(endpoint, f"conversions-e2e-{uuid.uuid4().hex[:12]}")
        bucket.s3.create_bucket(Bucket=bucket.name)
        return bucket

    @property
    def s3(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION)

    @property
    def sqs(self) -> Any:
        return boto3.client("sqs", endpoint_url=self.endpoint, region_name=REGION)

    @property
    def home(self) -> str:
        """CONVERSIONS_HOME for the deployment: the connection named in the URL."""
        return f"s3://{CONN_ID}@{self.name}/{self.prefix}"

    def connection_env(self) -> dict[str, str]:
        """The Airflow connection with moto's endpoint (what a MinIO user writes too)."""
        conn = {
            "conn_type": "aws",
            "login": "test",
            "password": "test",
            "extra": {"endpoint_url": self.endpoint, "region_name": REGION},
        }
        return {f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(conn)}

    def notify_queue(self, queue_name: str) -> str:
        """The README's bucket side: a queue whose policy lets the bucket send to it, and
        the bucket's ``s3:ObjectCreated:*`` notifications for the inbox prefix to it. Returns
        the queue's URL (CONVERSIONS_WAKEUP_SQS_QUEUE)."""
        url = self.sqs.create_queue(QueueName=queue_name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.sqs.set_queue_attributes(
            QueueUrl=url, Attributes={"Policy": json.dumps(queue_policy(arn, self.name))}
        )
        self.s3.put_bucket_notification_configuration(
            Bucket=self.name,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": arn,
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {
                            "Key": {
                                "FilterRules": [
                                    {"Name": "prefix", "Value": f"{self.prefix}/inbox/"}
                                ]
                            }
                        },
                    }
                ]
            },
        )
        return url

    def drain(self, queue_url: str) -> list[dict]:
        """Receive and delete every message waiting on the queue (bounded: a few empty polls);
        their bodies. S3 sends an ``s3:TestEvent`` when the configuration is put."""
        bodies: list[dict] = []
        for _ in range(3):
            got = self.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            for message in got:
                bodies.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return bodies

    def put(self, relative: str, data: bytes) -> None:
        """The sender: one upload under the final name (an object appears whole)."""
        self.s3.put_object(Bucket=self.name, Key=f"{self.prefix}/{relative}", Body=data)

    def objects(self, folder: str) -> dict[str, bytes]:
        """Every object under ``<prefix>/<folder>/``, by its key below that, with its bytes."""
        s3 = self.s3
        found = {}
        start = f"{self.prefix}/{folder}/"
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=start):
            for item in page.get("Contents", []):
                body = s3.get_object(Bucket=self.name, Key=item["Key"])["Body"].read()
                found[item["Key"][len(start) :]] = body
        return found

    def keys(self) -> list[str]:
        """Every key under the prefix (for diagnostics)."""
        s3 = self.s3
        return [
            item["Key"][len(self.prefix) + 1 :]
            for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.name, Prefix=f"{self.prefix}/"
            )
            for item in page.get("Contents", [])
        ]


def queue_policy(queue_arn: str, bucket: str) -> dict:
    """The queue policy the README shows: S3 may send, for this bucket only."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "bucket-notifications",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}},
            }
        ],
    }
