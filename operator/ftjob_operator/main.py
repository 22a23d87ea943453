"""`ftjob-operator`: run the kopf operator (standalone, one replica) with a liveness and a metrics endpoint."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from collections.abc import Sequence

import kopf

from .cache import ClusterCache
from .controller import Controller
from .event_recorder import EventRecorder
from .handlers import build_registry, kopf_settings
from .kube import Kube, RetryPolicy, load_api_client
from .metrics import Metrics
from .reconcile import Reconciler
from .settings import OperatorSettings, log_level_number, settings_from

logger = logging.getLogger(__name__)


def configure_logging(settings: OperatorSettings) -> None:
    kopf.configure(debug=settings.log_level == "DEBUG", quiet=settings.log_level in ("WARNING", "ERROR"))
    logging.getLogger().setLevel(log_level_number(settings))
    level = log_level_number(settings)
    # urllib3 and the client would log request bodies at DEBUG; keep them quiet.
    for noisy in ("urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, level))
    if level > logging.DEBUG:
        # kopf reports every successful watch-event handler, and aiohttp every liveness probe, at INFO;
        # the operator logs what it does itself. Failures are still logged (WARNING and above).
        for chatty in ("kopf.objects", "aiohttp.access"):
            logging.getLogger(chatty).setLevel(max(logging.WARNING, level))


M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena (up to 8 per core), and each keeps what
    it once held: with a dozen reconcile, watch and HTTP threads, the large buffers of API answers made RSS
    grow with the number of threads rather than the number of objects. Two arenas are enough for threads that
    mostly wait on the network. Must run before the threads start; a no-op off glibc."""
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas)


def main(argv: Sequence[str] | None = None) -> int:
    limit_malloc_arenas()
    settings = settings_from(sys.argv[1:] if argv is None else argv, os.environ)
    configure_logging(settings)
    metrics = Metrics()
    # One attempt per request: a failed reconcile is queued again after the server's Retry-After or a
    # backoff (controller.py), instead of a worker thread sleeping on it.
    kube = Kube(
        load_api_client(pool_size=settings.workers + 4),
        retry=RetryPolicy(attempts=1),
        on_response=metrics.count_request,
    )
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    cache = ClusterCache()
    events = EventRecorder(kube)
    events.start()
    reconciler = Reconciler(kube, settings, metrics, cache=cache, events=events)
    controller = Controller(reconciler, cache, settings, metrics)
    reconciler.set_defer_record(controller.defer_record)
    controller.prime(kube)
    scope = "all namespaces" if settings.all_namespaces else "namespaces " + ", ".join(settings.namespaces)
    logger.info("ftjob-operator watching %s; trainer image %s", scope, settings.trainer_image)
    kopf.run(
        registry=build_registry(controller),
        settings=kopf_settings(settings),
        standalone=True,  # one replica (Deployment strategy Recreate); no peering objects needed
        priority=0,
        clusterwide=settings.all_namespaces,
        namespaces=list(settings.namespaces),
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz",
    )
    events.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
