"""Shared helpers for the engine tests: kernel paths, buffers, state access."""

from __future__ import annotations

import numpy as np
import pytest

from charlstm_cli import model as cm

KERNEL_PATHS = ("avx512", "avx2", "portable")


def use_kernel(name: str) -> None:
    """Force a kernel path, skipping the test when this processor lacks it."""
    try:
        cm.force_kernel(name)
    except cm.N.InvalidArgumentError:
        pytest.skip(f"this processor cannot run the {name} kernels")


def as_array(view: memoryview) -> np.ndarray:
    """Return a NumPy array sharing memory with a float32 view from C."""
    return np.frombuffer(view, dtype=np.float32)


def random_tokens(rng: np.random.Generator, n_vocab: int, batch: int, steps: int):
    """Return (inputs, targets) as (B, T) int32 arrays."""
    inputs = rng.integers(0, n_vocab, size=(batch, steps), dtype=np.int32)
    targets = rng.integers(0, n_vocab, size=(batch, steps), dtype=np.int32)
    return inputs, targets


def central_difference(f, x: np.ndarray, index: int, eps: float) -> float:
    """Return (f(x + eps e_i) - f(x - eps e_i)) / 2 eps, restoring x[index]."""
    saved = x[index]
    x[index] = saved + eps
    plus = f()
    x[index] = saved - eps
    minus = f()
    x[index] = saved
    return (plus - minus) / (2 * eps)


def set_state(trainer: cm.Trainer, h0: np.ndarray, c0: np.ndarray) -> None:
    as_array(trainer.buffer("state_h"))[:] = h0.ravel()
    as_array(trainer.buffer("state_c"))[:] = c0.ravel()


def loss_and_grads(trainer, inputs, targets, h0, c0):
    """Run forward_backward from (h0, c0); return loss, grads, dh0, dc0 copies."""
    set_state(trainer, h0, c0)
    trainer.zero_grad()
    loss = trainer.forward_backward(inputs.ravel().tolist(), targets.ravel().tolist())
    grads = as_array(trainer.buffer("grads")).copy()
    dh0 = as_array(trainer.buffer("dstate_h")).copy()
    dc0 = as_array(trainer.buffer("dstate_c")).copy()
    return loss, grads, dh0, dc0
