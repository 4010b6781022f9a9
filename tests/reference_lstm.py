"""An independent float64 NumPy LSTM used as the reference in tests.

It follows the layout documented in charlstm.h: per layer w_ih (D, 4H),
w_hh (H, 4H), bias (4H) with gates ordered i, f, o, g, then out.weight (H, V)
and out.bias (V). The loss is the mean cross-entropy over all B*T positions.
"""

from __future__ import annotations

import numpy as np


def unpack(flat: np.ndarray, tensors) -> dict[str, np.ndarray]:
    """Split a flat parameter vector into named arrays using the tensor table."""
    return {
        t.name: flat[t.offset : t.offset + t.n_elements].reshape(t.shape) for t in tensors
    }


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def forward_loss(
    params: dict[str, np.ndarray],
    inputs: np.ndarray,
    targets: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Return (mean loss, final h, final c) for (B, T) inputs and (L, B, H) state."""
    n_layers, batch, hidden = h0.shape
    steps = inputs.shape[1]
    n_vocab = params["out.bias"].shape[0]
    x = np.eye(n_vocab)[inputs]  # (B, T, V) one-hot
    h_final, c_final = np.empty_like(h0), np.empty_like(c0)
    for layer in range(n_layers):
        w_ih = params[f"lstm.{layer}.w_ih"]
        w_hh = params[f"lstm.{layer}.w_hh"]
        bias = params[f"lstm.{layer}.bias"]
        h, c = h0[layer], c0[layer]
        outputs = np.empty((batch, steps, hidden))
        for t in range(steps):
            a = x[:, t] @ w_ih + h @ w_hh + bias
            i = sigmoid(a[:, :hidden])
            f = sigmoid(a[:, hidden : 2 * hidden])
            o = sigmoid(a[:, 2 * hidden : 3 * hidden])
            g = np.tanh(a[:, 3 * hidden :])
            c = f * c + i * g
            h = o * np.tanh(c)
            outputs[:, t] = h
        h_final[layer], c_final[layer] = h, c
        x = outputs
    logits = x @ params["out.weight"] + params["out.bias"]
    logits = logits - logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)
    return float(-picked.mean()), h_final, c_final
