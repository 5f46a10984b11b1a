"""The interruption queue on AWS: an SQS queue that EventBridge rules (and Auto Scaling
lifecycle notifications) deliver instance notices to, read as
aws-node-termination-handler's queue mode reads it.

Receives a batch at a time (a short long-poll, in a worker thread, so no reconcile waits
on it for long) and deletes a message once its notice is recorded on the node, so a
message is acted on at least once and a redelivery finds the notice already there.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from molt.cloud.provider import ProviderError
from molt.policy.interruptions import Notice, parse_message

RETRIES = Config(retries={"max_attempts": 3, "mode": "standard"})
BATCH = 10
"""SQS hands out at most ten messages per receive."""


@dataclass(frozen=True)
class Received:
    """One message: its notice (None when it is not one Molt acts on), and its handle."""

    notice: Notice | None
    receipt: str
    message_id: str


class InterruptionQueue:
    """Reads and deletes the messages of one SQS queue (by URL)."""

    def __init__(
        self, url: str, session: boto3.session.Session | None = None, *, wait_seconds: int = 1
    ) -> None:
        self.url = url
        self.wait_seconds = wait_seconds
        self.sqs: Any = (session or boto3.session.Session()).client("sqs", config=RETRIES)

    async def receive(self) -> list[Received]:
        try:
            answer = await asyncio.to_thread(
                lambda: self.sqs.receive_message(
                    QueueUrl=self.url,
                    MaxNumberOfMessages=BATCH,
                    WaitTimeSeconds=self.wait_seconds,
                )
            )
        except (ClientError, BotoCoreError) as error:
            raise ProviderError(
                f"cannot read the interruption queue {self.url}: {error}"
            ) from error
        return [
            Received(parse_message(str(m.get("Body", ""))), m["ReceiptHandle"], m["MessageId"])
            for m in answer.get("Messages") or []
        ]

    async def delete(self, received: Received) -> None:
        try:
            await asyncio.to_thread(
                lambda: self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=received.receipt)
            )
        except (ClientError, BotoCoreError) as error:
            raise ProviderError(f"cannot delete message {received.message_id}: {error}") from error
