"""Recomputed decoder layers whose inputs wait in host memory instead of on the GPU.

With every layer recomputed, what a step still keeps on the GPU between its forward and backward passes is
each layer's input: `2 x tokens x hidden` bytes a layer, 0.94 GiB for a Mistral-7B-shaped model at 3,600
tokens. Under a tight memory cap that is what holds the micro-batch down, and a small micro-batch leaves
the GPU waiting on Python's kernel launches (issue 15: micro-batch 4 with every layer recomputed ran at
half the GPU's pace). Here the input is copied to pinned host memory on a side stream while the layer runs,
and copied back one layer ahead of the backward pass, so the GPU holds two layers' inputs at most and the
freed memory buys a larger micro-batch.

The layer runs as one autograd node (`OffloadedLayer`), like reentrant checkpointing: its forward pass
computes the output without a graph, its backward pass rebuilds the layer's activations from the input
(with the RNG and autocast state of the forward pass, so dropout draws the same masks) and backpropagates
through them, which accumulates the adapters' gradients. The LoRA layers take their training path in both
passes (`fused_lora.fused_without_grad`), hence the same RNG draws. Only single-process training uses it:
DDP's gradient hooks fire inside the nested backward.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from . import fused_lora

_ANCHOR: dict[torch.device, torch.Tensor] = {}
"""A leaf that requires grad, one per device, passed to every offloaded layer so that its output requires
grad even when its input does not (the first layer's input comes from frozen embeddings)."""


def _anchor(device: torch.device) -> torch.Tensor:
    if device not in _ANCHOR:
        _ANCHOR[device] = torch.empty(0, device=device, requires_grad=True)
    return _ANCHOR[device]


@dataclass(eq=False)
class Saved:
    """A layer input kept in host memory, and its way back."""

    host: torch.Tensor
    device: torch.device
    fetched: torch.Tensor | None = None
    """The input back on the GPU, once prefetched."""
    fetched_event: torch.cuda.Event | None = None
    order: int = field(default=0)


class HostOffload:
    """Copies layer inputs to pinned host memory and back, on a stream of its own so the copies overlap the
    layers' arithmetic. Inputs are handed back in the reverse order of saving (the backward pass), and the
    one saved before is prefetched while the current one is used."""

    def __init__(self) -> None:
        self._streams: dict[torch.device, torch.cuda.Stream] = {}
        self._pending: list[weakref.ref[Saved]] = []
        self._counter = 0
        self.saved_bytes = 0
        """Bytes copied to the host so far (for the log and the tests)."""

    def _stream(self, device: torch.device) -> torch.cuda.Stream:
        if device not in self._streams:
            self._streams[device] = torch.cuda.Stream(device)
        return self._streams[device]

    def save(self, tensor: torch.Tensor) -> Saved:
        self._counter += 1
        self.saved_bytes += tensor.numel() * tensor.element_size()
        self._pending = [ref for ref in self._pending if ref() is not None]
        if tensor.device.type != "cuda":
            # CPU runs (the tests): the same bookkeeping with a plain copy, so no GPU tensor is shared.
            saved = Saved(host=tensor.detach().clone(), device=tensor.device, order=self._counter)
        else:
            stream = self._stream(tensor.device)
            host = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=True)
            stream.wait_stream(torch.cuda.current_stream(tensor.device))
            with torch.cuda.stream(stream):
                host.copy_(tensor.detach(), non_blocking=True)
            # The caching allocator must not hand the input's memory out again before the copy has read it.
            tensor.record_stream(stream)
            saved = Saved(host=host, device=tensor.device, order=self._counter)
        self._pending.append(weakref.ref(saved))
        return saved

    def _fetch(self, saved: Saved) -> None:
        if saved.fetched is not None:
            return
        if saved.device.type != "cuda":
            saved.fetched = saved.host
            return
        stream = self._stream(saved.device)
        with torch.cuda.stream(stream):  # ordered after this input's copy to the host (same stream)
            saved.fetched = saved.host.to(saved.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(stream)
        saved.fetched_event = event

    def load(self, saved: Saved) -> torch.Tensor:
        """The input back on its device, usable on the current stream; prefetches the one saved before."""
        self._fetch(saved)
        tensor = saved.fetched
        assert tensor is not None
        if saved.device.type == "cuda":
            current = torch.cuda.current_stream(saved.device)
            assert saved.fetched_event is not None
            current.wait_event(saved.fetched_event)
            tensor.record_stream(current)
        saved.fetched = None
        alive = [s for s in (ref() for ref in self._pending) if s is not None and s is not saved]
        self._pending = [weakref.ref(s) for s in alive]
        earlier = [s for s in alive if s.order < saved.order and s.device == saved.device]
        if earlier:
            self._fetch(max(earlier, key=lambda s: s.order))
        return tensor


@dataclass(frozen=True)
class _ForwardState:
    cpu_rng: torch.Tensor
    device_rng: tuple[int, torch.Tensor] | None
    autocast: tuple[tuple[str, bool, torch.dtype], ...]


def _capture(device: torch.device) -> _ForwardState:
    device_rng = None
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        device_rng = (index, torch.cuda.get_rng_state(index))
    autocast = tuple(
        (kind, torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind)) for kind in ("cuda", "cpu")
    )
    return _ForwardState(torch.get_rng_state(), device_rng, autocast)


@contextmanager
def _replayed(state: _ForwardState) -> Iterator[None]:
    """The RNG and autocast state of the forward pass, for the rebuild; the RNG streams resume afterwards
    where they were (the backward pass must not shift the next forward's dropout masks)."""
    devices = [state.device_rng[0]] if state.device_rng is not None else []
    with torch.random.fork_rng(devices=devices, enabled=True):
        torch.set_rng_state(state.cpu_rng)
        if state.device_rng is not None:
            torch.cuda.set_rng_state(state.device_rng[1], state.device_rng[0])
        with (
            torch.autocast("cuda", dtype=state.autocast[0][2], enabled=state.autocast[0][1]),
            torch.autocast("cpu", dtype=state.autocast[1][2], enabled=state.autocast[1][1]),
        ):
            yield


def _split(output: Any) -> tuple[torch.Tensor, tuple[Any, ...] | None]:
    """A decoder layer returns its hidden states, alone or first in a tuple (older transformers)."""
    if isinstance(output, torch.Tensor):
        return output, None
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        if any(isinstance(o, torch.Tensor) and o.requires_grad for o in output[1:]):
            raise TypeError("an offloaded layer may return one tensor that needs gradients")
        return output[0], output[1:]
    raise TypeError(f"an offloaded layer must return a tensor, not {type(output).__name__}")


class OffloadedLayer(torch.autograd.Function):
    """One recomputed layer whose input waits in host memory (see the module's docstring)."""

    @staticmethod
    def forward(
        ctx: Any,
        run: Callable[[torch.Tensor], Any],
        offload: HostOffload,
        rest: list[Any],
        anchor: torch.Tensor,
        hidden: torch.Tensor,
    ) -> torch.Tensor:
        ctx.run, ctx.offload, ctx.state = run, offload, _capture(hidden.device)
        # Without a graph, on the training path of the rebuild (fused LoRA layers, dropout on), so the same
        # RNG draws.
        with torch.no_grad(), fused_lora.fused_without_grad():
            output = run(hidden)
        out, extra = _split(output)
        rest.append(extra)
        ctx.saved = offload.save(hidden)
        return out.detach()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hidden = ctx.offload.load(ctx.saved).detach().requires_grad_(ctx.needs_input_grad[4])
        ctx.saved = None
        with _replayed(ctx.state), torch.enable_grad():
            out, _ = _split(ctx.run(hidden))
        if out.requires_grad:  # not when the layer has no adapter and its input needs no gradient
            torch.autograd.backward(out, grad)
        return None, None, None, None, hidden.grad if ctx.needs_input_grad[4] else None


def offloaded_checkpoint(offload: HostOffload, fallback: Callable[..., Any]) -> Callable[..., Any]:
    """A `_gradient_checkpointing_func` for transformers' GradientCheckpointingLayer: it is called as
    `func(partial(forward, **kwargs), hidden_states)`. Calls it cannot serve with the layer's input in host
    memory (more positional inputs, a keyword tensor that needs gradients, a non-tensor input) go to
    `fallback`, the usual checkpoint."""

    def checkpoint(run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        keywords = run.keywords.values() if isinstance(run, partial) else ()
        if (
            len(args) != 1
            or kwargs
            or not isinstance(args[0], torch.Tensor)
            or not args[0].is_floating_point()
            or not torch.is_grad_enabled()
            or any(isinstance(v, torch.Tensor) and v.requires_grad for v in keywords)
        ):
            return fallback(run, *args, **kwargs)
        hidden = args[0]
        rest: list[Any] = []
        out = OffloadedLayer.apply(run, offload, rest, _anchor(hidden.device), hidden)
        extra = rest[0] if rest else None
        return out if extra is None else (out, *extra)

    setattr(checkpoint, "offloads", True)  # noqa: B010 (marks it, so a layer is never wrapped twice)
    return checkpoint
