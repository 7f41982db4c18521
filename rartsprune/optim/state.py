"""Saving and restoring search state: RNG states as tensors, and the per-step undo snapshot.

Two jobs, both about putting tensors back exactly as they were:

* `get_rng_state` / `set_rng_state` capture the torch CPU generator and every initialised CUDA
  generator as ``uint8`` tensors, so a checkpoint holding them loads with ``torch.load(weights_only=True)``.
* `StepSnapshot` copies every tensor a search step may change (weights, buffers, architecture
  parameters, optimizer states) into persistent buffers before the step, and copies them back when the step
  has to be undone (non-finite loss, fp16 overflow, an exception in the user's loss function).

Examples:
    >>> import torch
    >>> state = get_rng_state()
    >>> a = torch.rand(2)
    >>> set_rng_state(state)
    >>> torch.equal(a, torch.rand(2))
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["get_rng_state", "set_rng_state", "StepSnapshot"]


def get_rng_state() -> dict[str, Any]:
    """Return the torch RNG states as tensors: ``{"cpu": ByteTensor, "cuda": [ByteTensor, ...]}``.

    CUDA states are included only when CUDA is initialised in this process (no device is touched otherwise).

    Examples:
        >>> sorted(get_rng_state())
        ['cpu', 'cuda']
    """
    cuda: list[Tensor] = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return {"cpu": torch.get_rng_state().clone(), "cuda": cuda}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states captured by `get_rng_state`.

    Raises:
        ValueError: ``state`` lacks the ``"cpu"`` entry, or holds CUDA states for a different number of devices.

    Examples:
        >>> set_rng_state(get_rng_state())
    """
    if not isinstance(state, dict) or "cpu" not in state:
        raise ValueError("RNG state must be a dict with a 'cpu' tensor (as returned by get_rng_state())")
    torch.set_rng_state(state["cpu"].to(device="cpu", dtype=torch.uint8))
    cuda = list(state.get("cuda") or [])
    if cuda:
        if not torch.cuda.is_available():
            raise ValueError("the RNG state holds CUDA generator states but CUDA is not available here")
        if len(cuda) != torch.cuda.device_count():
            raise ValueError(
                f"the RNG state holds {len(cuda)} CUDA generator states but this process sees "
                f"{torch.cuda.device_count()} CUDA devices"
            )
        torch.cuda.set_rng_state_all([s.to(device="cpu", dtype=torch.uint8) for s in cuda])


class StepSnapshot:
    """Undo buffer for one search step.

    `capture` copies the given tensors and optimizer states into buffers that are kept (and reused)
    from step to step, so the steady state allocates nothing; `restore` copies them back, removes
    optimizer state created after the capture, and clears the ``.grad`` of the given tensors.

    The cost is one extra copy of every captured tensor in memory and one memcpy of it per step.

    Examples:
        >>> import torch
        >>> p = torch.nn.Parameter(torch.ones(3))
        >>> opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
        >>> snap = StepSnapshot()
        >>> snap.capture([p], [opt])
        >>> p.grad = torch.ones(3); opt.step()
        >>> snap.restore()
        >>> p.tolist(), len(opt.state)
        ([1.0, 1.0, 1.0], 0)
    """

    def __init__(self) -> None:
        self._buffers: dict[int, Tensor] = {}
        self._pairs: list[tuple[Tensor, Tensor]] = []
        self._grad_owners: list[Tensor] = []
        self._opt_states: list[tuple[torch.optim.Optimizer, dict[Any, dict[str, Any]]]] = []
        self._captured = False

    def capture(self, tensors: Iterable[Tensor], optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Copy ``tensors`` and the state of ``optimizers`` (every tensor value in ``opt.state``)."""
        live: list[Tensor] = []
        seen: set[int] = set()
        for t in tensors:
            if id(t) not in seen:
                seen.add(id(t))
                live.append(t)
        self._grad_owners = [t for t in live if t.requires_grad]
        self._opt_states = []
        for opt in optimizers:
            saved: dict[Any, dict[str, Any]] = {}
            for p, st in opt.state.items():
                saved[p] = dict(st)
                for v in st.values():
                    if isinstance(v, Tensor) and id(v) not in seen:
                        seen.add(id(v))
                        live.append(v)
            self._opt_states.append((opt, saved))
        buffers: dict[int, Tensor] = {}
        pairs: list[tuple[Tensor, Tensor]] = []
        with torch.no_grad():
            for t in live:
                buf = self._buffers.get(id(t))
                if buf is None or buf.shape != t.shape or buf.dtype != t.dtype or buf.device != t.device:
                    buf = torch.empty_like(t, memory_format=torch.preserve_format).detach()
                buf.copy_(t.detach())
                buffers[id(t)] = buf
                pairs.append((t, buf))
        self._buffers = buffers
        self._pairs = pairs
        self._captured = True

    def restore(self) -> None:
        """Put every captured tensor and optimizer state back; a no-op before the first `capture`."""
        if not self._captured:
            return
        with torch.no_grad():
            for t, buf in self._pairs:
                t.detach().copy_(buf)
        for opt, saved in self._opt_states:
            opt.state.clear()
            for p, st in saved.items():
                opt.state[p] = dict(st)
        for t in self._grad_owners:
            t.grad = None

    def clear(self) -> None:
        """Drop the buffers (frees their memory)."""
        self._buffers = {}
        self._pairs = []
        self._grad_owners = []
        self._opt_states = []
        self._captured = False
