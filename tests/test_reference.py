"""The C engine's loss and gradients against independent references.

The float64 NumPy model in reference_lstm.py always runs; its gradients come
from central differences in float64, which resolve errors far below those of
the float32 check in test_gradcheck.py. PyTorch's nn.LSTM runs when installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from charlstm_cli.model import Model, Trainer
from engine_helpers import (
    KERNEL_PATHS,
    as_array,
    central_difference,
    loss_and_grads,
    random_tokens,
    use_kernel,
)
from reference_lstm import forward_loss, unpack

BATCH, STEPS, VOCAB, HIDDEN = 2, 5, 7, 6


@pytest.fixture(params=KERNEL_PATHS)
def kernel(request):
    use_kernel(request.param)
    yield request.param


def _case(n_layers: int, seed: int):
    rng = np.random.default_rng(seed)
    model = Model(VOCAB, HIDDEN, n_layers, seed=seed)
    trainer = Trainer(model, BATCH, STEPS, clip_norm=0.0)
    inputs, targets = random_tokens(rng, VOCAB, BATCH, STEPS)
    shape = (n_layers, BATCH, HIDDEN)
    h0 = rng.normal(scale=0.5, size=shape).astype(np.float32)
    c0 = rng.normal(scale=0.5, size=shape).astype(np.float32)
    return model, trainer, inputs, targets, h0, c0


def _numeric_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    grad = np.zeros_like(x)
    flat, out = x.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        out[k] = central_difference(f, flat, k, eps)
    return grad


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_numpy_reference_loss_and_gradients(kernel, n_layers):
    model, trainer, inputs, targets, h0, c0 = _case(n_layers, seed=20 + n_layers)
    loss, grads, dh0, dc0 = loss_and_grads(trainer, inputs, targets, h0, c0)
    params = as_array(model.params()).astype(np.float64)
    h0d, c0d = h0.astype(np.float64), c0.astype(np.float64)

    def reference() -> float:
        return forward_loss(unpack(params, model.tensors), inputs, targets, h0d, c0d)[0]

    assert loss == pytest.approx(reference(), rel=1e-5)
    expected = _numeric_gradient(reference, params)
    for tensor in model.tensors:
        part = slice(tensor.offset, tensor.offset + tensor.n_elements)
        np.testing.assert_allclose(
            grads[part], expected[part], rtol=1e-3, atol=2e-6, err_msg=tensor.name
        )
    np.testing.assert_allclose(
        dh0, _numeric_gradient(reference, h0d).ravel(), rtol=1e-3, atol=2e-6
    )
    np.testing.assert_allclose(
        dc0, _numeric_gradient(reference, c0d).ravel(), rtol=1e-3, atol=2e-6
    )
    model.close()


def test_numpy_reference_final_state(kernel):
    model, trainer, inputs, targets, h0, c0 = _case(2, seed=5)
    loss_and_grads(trainer, inputs, targets, h0, c0)
    params = as_array(model.params()).astype(np.float64)
    _, h_final, c_final = forward_loss(
        unpack(params, model.tensors), inputs, targets, h0.astype(float), c0.astype(float)
    )
    carried_h = as_array(trainer.buffer("state_h")).reshape(h_final.shape)
    carried_c = as_array(trainer.buffer("state_c")).reshape(c_final.shape)
    np.testing.assert_allclose(carried_h, h_final, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carried_c, c_final, rtol=1e-5, atol=1e-6)
    model.close()


# ----------------------------------------------------------------------------
# PyTorch nn.LSTM + nn.Linear loaded with the same weights


def _torch_gate_order(block, hidden: int):
    """Reorder a (..., 4H) block from charlstm's i, f, o, g to PyTorch's i, f, g, o."""
    i, f, o, g = (block[..., k * hidden : (k + 1) * hidden] for k in range(4))
    return np.concatenate([i, f, g, o], axis=-1)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_pytorch_reference(kernel, n_layers):
    torch = pytest.importorskip(
        "torch", reason="PyTorch is not installed (pip install '.[reference]')"
    )
    model, trainer, inputs, targets, h0, c0 = _case(n_layers, seed=40 + n_layers)
    loss, grads, dh0, dc0 = loss_and_grads(trainer, inputs, targets, h0, c0)
    p = unpack(as_array(model.params()).astype(np.float64), model.tensors)

    lstm = torch.nn.LSTM(VOCAB, HIDDEN, n_layers, batch_first=True).double()
    linear = torch.nn.Linear(HIDDEN, VOCAB).double()
    with torch.no_grad():
        for layer in range(n_layers):
            w_ih = _torch_gate_order(p[f"lstm.{layer}.w_ih"], HIDDEN).T
            w_hh = _torch_gate_order(p[f"lstm.{layer}.w_hh"], HIDDEN).T
            getattr(lstm, f"weight_ih_l{layer}").copy_(torch.from_numpy(w_ih.copy()))
            getattr(lstm, f"weight_hh_l{layer}").copy_(torch.from_numpy(w_hh.copy()))
            bias = _torch_gate_order(p[f"lstm.{layer}.bias"], HIDDEN)
            getattr(lstm, f"bias_ih_l{layer}").copy_(torch.from_numpy(bias.copy()))
            getattr(lstm, f"bias_hh_l{layer}").zero_()
        linear.weight.copy_(torch.from_numpy(p["out.weight"].T.copy()))
        linear.bias.copy_(torch.from_numpy(p["out.bias"].copy()))

    x = torch.nn.functional.one_hot(torch.from_numpy(inputs.astype(np.int64)), VOCAB).double()
    h0t = torch.tensor(h0, dtype=torch.float64, requires_grad=True)
    c0t = torch.tensor(c0, dtype=torch.float64, requires_grad=True)
    out, _ = lstm(x, (h0t, c0t))
    logits = linear(out)
    y = torch.from_numpy(targets.astype(np.int64))
    torch_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
    torch_loss.backward()

    assert loss == pytest.approx(torch_loss.item(), rel=1e-5)
    g = unpack(grads.astype(np.float64), model.tensors)
    for layer in range(n_layers):
        expected_ih = getattr(lstm, f"weight_ih_l{layer}").grad.numpy().T
        expected_hh = getattr(lstm, f"weight_hh_l{layer}").grad.numpy().T
        expected_bias = getattr(lstm, f"bias_ih_l{layer}").grad.numpy()
        for name, expected in (
            ("w_ih", expected_ih),
            ("w_hh", expected_hh),
            ("bias", expected_bias),
        ):
            ours = _torch_gate_order(g[f"lstm.{layer}.{name}"], HIDDEN)
            np.testing.assert_allclose(
                ours, expected, rtol=1e-4, atol=1e-6, err_msg=f"lstm.{layer}.{name}"
            )
    np.testing.assert_allclose(g["out.weight"], linear.weight.grad.numpy().T, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g["out.bias"], linear.bias.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dh0, h0t.grad.numpy().ravel(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dc0, c0t.grad.numpy().ravel(), rtol=1e-4, atol=1e-6)
    model.close()
