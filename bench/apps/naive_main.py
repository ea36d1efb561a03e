"""Baseline: the naive cancel function. Everything imported at module level, no validation,
no retries, one DELETE with a ready IAM token, one publish with default batch settings."""

import base64
import json
import os
from typing import Any

import functions_framework
import requests
from google.cloud import pubsub_v1

session = requests.Session()
publisher = pubsub_v1.PublisherClient()
TOPIC = os.environ["RESULT_TOPIC"]
ENDPOINT = os.environ["DLI_ENDPOINT"]
PROJECT = os.environ["DLI_PROJECT_ID"]
TOKEN = os.environ["NAIVE_TOKEN"]


@functions_framework.cloud_event
def naive(event: Any) -> None:
    body = json.loads(base64.b64decode(event.data["message"]["data"]))
    job_id = body["job_id"]
    answer = session.delete(
        f"{ENDPOINT}/v1.0/{PROJECT}/jobs/{job_id}", headers={"X-Auth-Token": TOKEN}, timeout=10
    )
    result = {"job_id": job_id, "http_status": answer.status_code, "body": answer.json()}
    publisher.publish(TOPIC, json.dumps(result).encode()).result()
