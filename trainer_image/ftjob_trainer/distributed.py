"""Several processes (torchrun): who does what, and how the ranks agree.

torchrun starts one process per GPU on every node and sets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE
and GROUP_RANK (plus MASTER_ADDR/PORT) in each one's environment. Without them (or WORLD_SIZE 1) this
module does nothing and the trainer runs as a single process.

The rules (docs/trainer.md, "Several processes"):

- global rank 0 is the only one that writes under the output prefix, prints progress records and writes
  the run's termination summary;
- the local rank 0 of each node (pod) downloads into that node's work directory; the other ranks of the
  node read the same files once it is done;
- a step that may fail on some ranks only (a download, the output prefix's claim, the data check) ends in
  an agreement: every rank learns whether any rank failed, and they all exit with the same code instead
  of waiting forever for a rank that is gone (`all_or_none`);
- a stop (SIGTERM) is acted upon when every rank agrees, at the same micro-batch (`any`).

Collectives of this module go through a CPU (gloo) group, so they work whatever the training backend is.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from ftjob import contract
from ftjob.contract import ExitCode

from .errors import TrainerError

log = logging.getLogger("ftjob.trainer")

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

DEFAULT_TIMEOUT_SECONDS = 3600
"""How long a rank waits at a collective for the others: long enough for a node's local rank 0 to download
tens of GB of weights, or for rank 0 to generate the evaluation answers while the others wait."""
ENV_TIMEOUT = "FTJOB_DISTRIBUTED_TIMEOUT_SECONDS"
ENV_SHARE_STORE_OFF = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"


class PeerFailed(TrainerError):
    """Another rank failed during a step that all ranks agree on; this one exits with that rank's code."""

    reason = "WorkerFailed"

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        try:
            self.exit_code = ExitCode(exit_code)
        except ValueError:
            self.exit_code = ExitCode.INFRASTRUCTURE


@dataclass(frozen=True)
class Distributed:
    """This process's place among the processes of the run (one process: rank 0 of a world of 1)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    node_rank: int = 0
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Distributed:
        world = int(env.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return cls()
        return cls(
            rank=int(env.get("RANK", "0")),
            local_rank=int(env.get("LOCAL_RANK", "0")),
            world_size=world,
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", "1")),
            node_rank=int(env.get("GROUP_RANK", "0")),
            timeout_seconds=int(env.get(ENV_TIMEOUT, DEFAULT_TIMEOUT_SECONDS)),
        )

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Global rank 0: the only writer under the output prefix."""
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        """Local rank 0: the one that downloads into this node's work directory."""
        return self.local_rank == 0

    @property
    def nodes(self) -> int:
        return max(1, self.world_size // max(1, self.local_world_size))

    def describe(self, backend: str, strategy: str) -> dict[str, Any]:
        """The manifest's `resolved.distributed`."""
        return {
            "worldSize": self.world_size,
            "nodes": self.nodes,
            "processesPerNode": self.local_world_size,
            "backend": backend,
            "strategy": strategy,
        }

    # -- process group ------------------------------------------------------------------------------

    def init(self) -> None:
        """Join the process group (NCCL for training on GPUs, with a gloo group beside it for the CPU-side
        agreements of this module; gloo alone on CPUs)."""
        if not self.enabled:
            return
        import torch
        import torch.distributed as dist

        if dist.is_initialized():
            return
        timeout = timedelta(seconds=self.timeout_seconds)
        if torch.cuda.is_available():
            # Before anything touches CUDA: every process of a node on its own GPU (QLoRA's 4-bit model too).
            torch.cuda.set_device(self.local_rank)
            dist.init_process_group(backend="nccl", timeout=timeout)
            _state["cpu_group"] = dist.new_group(backend="gloo", timeout=timeout)
        else:
            dist.init_process_group(backend="gloo", timeout=timeout)
        log.info(
            "process %d of %d (node %d, local rank %d), backend %s",
            self.rank,
            self.world_size,
            self.node_rank,
            self.local_rank,
            self.backend(),
        )

    def backend(self) -> str:
        if not self.enabled:
            return "none"
        import torch.distributed as dist

        return str(dist.get_backend()) if dist.is_initialized() else "none"

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    # -- collectives (no-ops for one process) --------------------------------------------------------

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier(group=_state.get("cpu_group"))

    def max(self, value: int) -> int:
        """The largest of every rank's `value`."""
        if not self.enabled:
            return value
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=_state.get("cpu_group"))
        return int(tensor.item())

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one: so every rank acts on a stop at the same point."""
        return bool(self.max(int(flag))) if self.enabled else flag

    def broadcast(self, value: T) -> T:
        """Rank 0's `value` (picklable), on every rank."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        box: list[Any] = [value]
        dist.broadcast_object_list(box, src=0, group=_state.get("cpu_group"))
        return box[0]  # type: ignore[no-any-return]

    @contextmanager
    def all_or_none(self, what: str) -> Iterator[None]:
        """The block runs on every rank, then the ranks agree: a rank whose block raised re-raises its error;
        the others raise `PeerFailed` with its exit code. Every rank must enter the same blocks in the same
        order; no collective may run inside one (a failed rank would never join it)."""
        if not self.enabled:
            yield
            return
        try:
            yield
        except BaseException as exc:
            self.max(exit_code_of(exc))
            mark_agreed(exc)
            raise
        worst = self.max(0)
        if worst:
            raise mark_agreed(PeerFailed(f"another process failed during {what} (exit code {worst})", worst))

    def on_main(self, what: str, work: Callable[[], T]) -> T:
        """Rank 0 runs `work`; the others wait and get its result (or fail with its exit code)."""
        result: Any = None
        with self.all_or_none(what):
            if self.is_main:
                result = work()
        return self.broadcast(result)  # type: ignore[no-any-return]

    def on_each_node(self, what: str, work: Callable[[], T]) -> T:
        """Each node's local rank 0 runs `work` (a download into the node's work directory: the same paths
        on every node); the other ranks wait and use rank 0's result, which names the same local files."""
        result: Any = None
        with self.all_or_none(what):
            if self.is_local_main:
                result = work()
        shared = self.broadcast(result)
        return result if self.is_local_main else shared  # type: ignore[no-any-return]


_state: dict[str, Any] = {}
"""The gloo group beside an NCCL default group (a ProcessGroup does not fit in a frozen dataclass)."""


_AGREED = "_ftjob_agreed"


def mark_agreed(exc: E) -> E:
    """Tag an error that every rank knows of (each raises one at the same point)."""
    setattr(exc, _AGREED, True)
    return exc


def is_agreed(exc: BaseException) -> bool:
    """Whether every rank stopped at the same point: then they can meet once more before exiting. After any
    other error a rank exits at once (the others may be inside a collective it will never join; torchrun
    stops them when it sees this one exit)."""
    return bool(getattr(exc, _AGREED, False))


def exit_code_of(exc: BaseException) -> int:
    if isinstance(exc, TrainerError):
        return int(exc.exit_code)
    return int(ExitCode.INFRASTRUCTURE)


# -- the launcher: torchrun, with the workers' exit code ---------------------------------------------------


def launch(torchrun_args: Sequence[str], env: Mapping[str, str]) -> int:
    """`ftjob-train launch <torchrun options>`: torchrun running `ftjob_trainer.cli` in every worker, exiting
    with the trainer's exit code (rank 0's, else the first failed rank's) where torchrun exits 1 whatever
    failed, and with 143 when stopped by SIGTERM. The exit code is what the Job's podFailurePolicy reads.

    torchrun gives its workers TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds (30 by default) after forwarding a
    SIGTERM before it kills them; here it defaults to the spec's grace period minus a margin, so the
    workers have the time to save their checkpoint."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    grace = _grace_period(env)
    if grace is not None and "TORCH_ELASTIC_SHUTDOWN_TIMEOUT" not in os.environ:
        os.environ["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] = str(max(5, grace - 10))
    # torchrun's agents share the rendezvous store with the workers by default, and then only an agent's
    # first round publishes the workers' MASTER_ADDR/PORT: a pod that replaces a failed node joins a later
    # round, waits for keys that node 0's agent never writes again, and the retry times out on every node
    # (pytorch/pytorch#135712). Unshared, node 0's agent publishes them in every round.
    os.environ.setdefault(ENV_SHARE_STORE_OFF, "1")
    args = parse_args([*torchrun_args, "-m", "ftjob_trainer.cli"])
    try:
        run(args)
    except ChildFailedError as exc:
        code = _first_failure(exc.failures)
        log.error("a worker failed: exit %d", code)
        return code
    except SignalException as exc:
        log.warning("%s: the workers were stopped", exc.sigval.name)
        return 128 + int(exc.sigval)
    return 0


def _first_failure(failures: Mapping[int, Any]) -> int:
    """The trainer's exit code: rank 0's, else the first to fail by itself. A process killed by a signal
    was most likely stopped by torchrun after another failed, unless all were."""
    exited = {rank: f for rank, f in failures.items() if int(f.exitcode) > 0}
    if exited:
        rank = 0 if 0 in exited else min(exited, key=lambda r: (exited[r].timestamp, r))
        return int(exited[rank].exitcode)
    first = min(failures.values(), key=lambda f: f.timestamp)
    return 128 - int(first.exitcode)  # killed by a signal: -15 -> 143, as a shell reports it


def _grace_period(env: Mapping[str, str]) -> int | None:
    try:
        spec = json.loads(env.get(contract.ENV_SPEC, "") or "{}")
        value = spec.get("checkpointing", {}).get("terminationGracePeriodSeconds")
    except (ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) else None
