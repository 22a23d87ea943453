"""The floor that kopf gives: the smallest operator that turns a FineTuneJob into a Job.

One `on.create` handler that creates a bare Job (one container, no volumes, no status, no Events, no
validation) with the `kubernetes` package's synchronous client, with kopf's default settings. It is the
baseline of `bench/operator_scale.py`: the same kopf and client versions as the project's operator, so the
difference is what the project's operator does on top of (or instead of) kopf's own handling.

    python bench/minimal_kopf_operator.py --namespace NS --liveness-port PORT
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import kopf
from kubernetes import client, config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--liveness-port", type=int, required=True)
    args = parser.parse_args()
    config.load_kube_config()  # type: ignore[no-untyped-call]
    batch = client.BatchV1Api()

    @kopf.on.create("ftjob.dev", "v1alpha1", "finetunejobs")
    def create_job(name: str, namespace: str, uid: str, **_: Any) -> None:
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": f"{name}-train",
                "ownerReferences": [
                    {
                        "apiVersion": "ftjob.dev/v1alpha1",
                        "kind": "FineTuneJob",
                        "name": name,
                        "uid": uid,
                        "controller": True,
                    }
                ],
            },
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "trainer", "image": "busybox", "command": ["true"]}],
                    }
                },
            },
        }
        batch.create_namespaced_job(namespace, body)

    logging.getLogger().setLevel(logging.WARNING)
    kopf.configure(quiet=True)
    kopf.run(
        standalone=True,
        namespaces=[args.namespace],
        liveness_endpoint=f"http://127.0.0.1:{args.liveness_port}/healthz",
    )


if __name__ == "__main__":
    main()
