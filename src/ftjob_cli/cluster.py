"""`ftjob get | describe | logs | results | watch`: follow FineTuneJobs on a cluster, kubectl style.

The same commands run as a kubectl plugin when this program is on PATH as `kubectl-ftjob`
(`kubectl ftjob get`). Everything goes through the user's own kubeconfig and, for `results`, their own
object-store credentials: nothing here needs more than read access.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import yaml

from . import views
from .kube import Cluster, ClusterError, JsonDict
from .logtext import HumanLines, human_text

WATCH_EXIT_SUCCEEDED = 0
WATCH_EXIT_FAILED = 1
WATCH_EXIT_ERROR = 2
WATCH_EXIT_TIMEOUT = 124
"""As `timeout(1)` exits, so a CI step can tell "the run failed" from "we stopped waiting"."""


def add_connection_flags(parser: argparse.ArgumentParser, *, all_namespaces: bool = False) -> None:
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    if all_namespaces:
        parser.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")


def register(sub: Any) -> None:
    """Add the cluster commands to the `ftjob` parser's subcommands."""
    get = sub.add_parser("get", help="list FineTuneJobs with progress and the headline metric")
    get.add_argument("names", nargs="*", metavar="NAME")
    add_connection_flags(get, all_namespaces=True)
    get.add_argument("-o", "--output", choices=["wide", "json", "yaml"], help="output format")
    get.set_defaults(func=cmd_get)

    describe = sub.add_parser(
        "describe", help="status, conditions, data report, metrics base vs tuned, artifacts, Events"
    )
    describe.add_argument("name", metavar="NAME")
    add_connection_flags(describe)
    describe.add_argument("-o", "--output", choices=["json", "yaml"], help="print the object instead")
    describe.add_argument(
        "--report",
        action="store_true",
        help="also show eval/report.md from the output prefix (your credentials)",
    )
    describe.add_argument("--profile", help="AWS profile for --report")
    describe.set_defaults(func=cmd_describe)

    logs = sub.add_parser("logs", help="the trainer's log (human lines), every attempt")
    logs.add_argument("name", metavar="NAME")
    add_connection_flags(logs)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the job finishes")
    logs.add_argument("--raw", action="store_true", help="include the machine-readable progress records")
    logs.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
    logs.set_defaults(func=cmd_logs)

    results = sub.add_parser(
        "results", help="download the report, data report, predictions and loss curve (your credentials)"
    )
    results.add_argument("name", metavar="NAME")
    add_connection_flags(results)
    results.add_argument("--to", type=Path, help="destination folder (default: ./<name>-results)")
    results.add_argument("--profile", help="AWS profile (default: $AWS_PROFILE / the default chain)")
    results.set_defaults(func=cmd_results)

    watch = sub.add_parser(
        "watch",
        help="a live progress bar until the job finishes; exit 0 Succeeded, 1 Failed, 124 timed out",
    )
    watch.add_argument("name", metavar="NAME")
    add_connection_flags(watch)
    watch.add_argument("--timeout", type=float, help="give up after this many seconds (exit 124)")
    watch.add_argument("--interval", type=float, default=2.0, help="seconds between reads (default 2)")
    watch.set_defaults(func=cmd_watch)


def _connect(args: argparse.Namespace) -> tuple[Cluster, str]:
    cluster = Cluster.connect(args.kubeconfig, args.context)
    return cluster, args.namespace or cluster.namespace


def _dump(doc: Any, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        out.write(yaml.safe_dump(doc, sort_keys=False))


def _guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except ClusterError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return WATCH_EXIT_ERROR
        except KeyboardInterrupt:
            return 130

    return wrapper


@_guarded
def cmd_get(args: argparse.Namespace) -> int:
    cluster, namespace = _connect(args)
    everywhere = bool(args.all_namespaces)
    if args.names and not everywhere:
        objects = [cluster.get_job(namespace, name) for name in args.names]
    else:
        objects = cluster.list_jobs(None if everywhere else namespace)
        if args.names:
            objects = [o for o in objects if o["metadata"]["name"] in args.names]
    if args.output in ("json", "yaml"):
        doc: JsonDict = (
            objects[0]
            if len(args.names) == 1 and len(objects) == 1
            else {"apiVersion": "v1", "kind": "List", "items": objects}
        )
        _dump(doc, args.output, sys.stdout)
        return 0
    if not objects:
        where = "any namespace" if everywhere else f"{namespace} namespace"
        print(f"No FineTuneJobs found in {where}.", file=sys.stderr)
        return 0
    print(views.get_table(objects, views.now_utc(), all_namespaces=everywhere, wide=args.output == "wide"))
    return 0


@_guarded
def cmd_describe(args: argparse.Namespace) -> int:
    cluster, namespace = _connect(args)
    obj = cluster.get_job(namespace, args.name)
    if args.output:
        _dump(obj, args.output, sys.stdout)
        return 0
    pods = cluster.trainer_pods(namespace, args.name)
    names = {args.name, *(p["metadata"]["name"] for p in pods)}
    job_name = views.status_of(obj).get("jobName")
    if job_name:
        names.add(str(job_name))
    events = cluster.events(namespace, names)
    print(views.describe(obj, events, pods, views.now_utc()))
    if args.report:
        return show_report(obj, args.profile, sys.stdout)
    return 0


def show_report(obj: JsonDict, profile: str | None, out: TextIO) -> int:
    """eval/report.md, rendered for a terminal by rich (tables, headings), as plain Markdown elsewhere."""
    import tempfile

    from .results import ResultsError, fetch, plan_downloads, s3_client

    spec = obj.get("spec") or {}
    with tempfile.TemporaryDirectory(prefix="ftjob-report-") as tmp:
        try:
            downloads = plan_downloads(str((spec.get("output") or {}).get("uri", "")), ("eval/report.md",))
            fetched = fetch(s3_client(spec.get("storage") or {}, profile), downloads, Path(tmp))
        except ResultsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if not fetched.written:
            print(f"\nReport: not there (yet): {downloads[0].relative}", file=out)
            return 0
        text = fetched.written[0].read_text(errors="replace")
    out.write("\n")
    if out.isatty():
        from rich.console import Console
        from rich.markdown import Markdown

        Console(file=out).print(Markdown(text))
    else:
        out.write(text)
    return 0


@_guarded
def cmd_logs(args: argparse.Namespace) -> int:
    cluster, namespace = _connect(args)
    obj = cluster.get_job(namespace, args.name)
    if not args.follow:
        pods = cluster.trainer_pods(namespace, args.name)
        if not pods:
            print(f"{args.name}: no trainer pod (yet, or any more: {views.phase(obj)})", file=sys.stderr)
            return 0
        for attempt, pod in enumerate(pods, 1):
            if len(pods) > 1:
                print(f"==> attempt {attempt}: pod {pod['metadata']['name']} <==")
            for line in human_text(cluster.pod_log(namespace, pod["metadata"]["name"]), raw=args.raw):
                print(line)
        return 0
    return follow_logs(cluster, namespace, args.name, raw=args.raw, interval=args.interval, out=sys.stdout)


def follow_logs(
    cluster: Cluster, namespace: str, name: str, *, raw: bool, interval: float, out: TextIO
) -> int:
    """Print every attempt's new lines as they come, until the job is finished and its last pod has stopped.

    Polls rather than streaming (`follow=true`): a poll survives a retry that replaces the pod, an API
    server restart and a dropped connection alike, at the cost of up to `interval` seconds of delay."""
    seen: dict[str, int] = {}  # pod -> characters already printed
    filters: dict[str, HumanLines] = {}
    while True:
        obj = cluster.get_job(namespace, name)
        finished = views.is_terminal(obj)
        pods = cluster.trainer_pods(namespace, name)
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            text = cluster.pod_log(namespace, pod_name)
            if pod_name not in seen:
                if len(pods) > 1 or seen:
                    out.write(f"==> pod {pod_name} <==\n")
                seen[pod_name] = 0
                filters[pod_name] = HumanLines(raw=raw)
            if len(text) < seen[pod_name]:
                seen[pod_name] = 0  # the log was rotated or the container restarted
            new, complete = text[seen[pod_name] :], text[seen[pod_name] :].rfind("\n") + 1
            seen[pod_name] += complete
            for line in new[:complete].splitlines():
                for kept in filters[pod_name].feed(line):
                    out.write(kept + "\n")
            for kept in filters[pod_name].flush():
                out.write(kept + "\n")
        out.flush()
        running = any((p.get("status") or {}).get("phase") in ("Pending", "Running") for p in pods)
        if finished and not running:
            out.write(views.outcome_line(obj) + "\n")
            return WATCH_EXIT_SUCCEEDED if views.phase(obj) == "Succeeded" else WATCH_EXIT_FAILED
        time.sleep(interval)


@_guarded
def cmd_results(args: argparse.Namespace) -> int:
    from .results import ResultsError, fetch, plan_downloads, s3_client

    cluster, namespace = _connect(args)
    obj = cluster.get_job(namespace, args.name)
    spec = obj.get("spec") or {}
    dest: Path = args.to or Path(f"{args.name}-results")
    try:
        downloads = plan_downloads(str((spec.get("output") or {}).get("uri", "")))
        fetched = fetch(s3_client(spec.get("storage") or {}, args.profile), downloads, dest)
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in fetched.written:
        print(f"{path}")
    if fetched.missing:
        print(
            f"not there (yet): {', '.join(fetched.missing)} (phase {views.phase(obj)})",
            file=sys.stderr,
        )
    if not fetched.written:
        print(f"error: nothing to download under {(spec.get('output') or {}).get('uri')}", file=sys.stderr)
        return 1
    report = dest / "eval" / "report.md"
    if report.exists():
        print(f"\nreport: {report}")
    return 0


@_guarded
def cmd_watch(args: argparse.Namespace) -> int:
    cluster, namespace = _connect(args)
    return watch(cluster, namespace, args.name, timeout=args.timeout, interval=args.interval, out=sys.stdout)


def watch(
    cluster: Cluster,
    namespace: str,
    name: str,
    *,
    timeout: float | None,
    interval: float,
    out: TextIO,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Redraw one line in a terminal (a new line only when it changes, elsewhere) until the job finishes."""
    tty = out.isatty()
    deadline = None if timeout is None else clock() + timeout
    last = ""
    while True:
        obj = cluster.get_job(namespace, name)
        line = f"{name}: {views.watch_line(obj)}"
        if tty:
            out.write("\r\x1b[2K" + line)
        elif line != last:
            out.write(line + "\n")
        out.flush()
        last = line
        if views.is_terminal(obj):
            out.write(("\n" if tty else "") + views.outcome_line(obj) + "\n")
            return WATCH_EXIT_SUCCEEDED if views.phase(obj) == "Succeeded" else WATCH_EXIT_FAILED
        if deadline is not None and clock() >= deadline:
            out.write(("\n" if tty else "") + f"{name}: still {views.phase(obj)} after {timeout:g} s\n")
            return WATCH_EXIT_TIMEOUT
        time.sleep(interval)
