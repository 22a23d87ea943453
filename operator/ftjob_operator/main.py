"""`ftjob-operator`: run the kopf operator (standalone, one replica) with a liveness and a metrics endpoint."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import kopf

from .handlers import build_registry, kopf_settings
from .kube import Kube, load_api_client
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


def main(argv: Sequence[str] | None = None) -> int:
    settings = settings_from(sys.argv[1:] if argv is None else argv, os.environ)
    configure_logging(settings)
    kube = Kube(load_api_client())
    metrics = Metrics()
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    reconciler = Reconciler(kube, settings, metrics)
    scope = "all namespaces" if settings.all_namespaces else "namespaces " + ", ".join(settings.namespaces)
    logger.info("ftjob-operator watching %s; trainer image %s", scope, settings.trainer_image)
    kopf.run(
        registry=build_registry(reconciler, settings),
        settings=kopf_settings(settings),
        standalone=True,  # one replica (Deployment strategy Recreate); no peering objects needed
        priority=0,
        clusterwide=settings.all_namespaces,
        namespaces=list(settings.namespaces),
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
