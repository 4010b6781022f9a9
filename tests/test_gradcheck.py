"""Central-difference checks of every gradient the C engine computes."""

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

# Small, unequal sizes so that a transposed index shows up as a wrong shape.
BATCH, STEPS, VOCAB, HIDDEN = 2, 5, 7, 6
EPS = 1e-2
SAMPLES_PER_TENSOR = 12


def _numeric(f, x: np.ndarray, index: int) -> float:
    return central_difference(f, x, index, EPS)


def _assert_close(analytic: float, numeric: float, what: str) -> None:
    # float32 forward: the loss carries ~1e-7 relative noise, EPS^2 truncation
    tolerance = 5e-4 + 5e-3 * max(abs(analytic), abs(numeric))
    assert abs(analytic - numeric) <= tolerance, (
        f"{what}: analytic {analytic:.6g} vs numeric {numeric:.6g}"
    )


@pytest.fixture(params=KERNEL_PATHS)
def kernel(request):
    use_kernel(request.param)
    yield request.param


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_gradients_match_finite_differences(kernel, n_layers):
    rng = np.random.default_rng(10 + n_layers)
    with Model(VOCAB, HIDDEN, n_layers, seed=7) as model:
        trainer = Trainer(model, BATCH, STEPS, clip_norm=0.0)
        inputs, targets = random_tokens(rng, VOCAB, BATCH, STEPS)
        shape = (n_layers, BATCH, HIDDEN)
        # a non-zero carried state, as after an earlier batch
        h0 = rng.normal(scale=0.5, size=shape).astype(np.float32)
        c0 = rng.normal(scale=0.5, size=shape).astype(np.float32)
        _, grads, dh0, dc0 = loss_and_grads(trainer, inputs, targets, h0, c0)
        params = as_array(model.params())

        def loss() -> float:
            return loss_and_grads(trainer, inputs, targets, h0, c0)[0]

        for tensor in model.tensors:
            count = min(SAMPLES_PER_TENSOR, tensor.n_elements)
            picks = rng.choice(tensor.n_elements, count, replace=False)
            for k in picks:
                index = tensor.offset + int(k)
                numeric = _numeric(loss, params, index)
                _assert_close(grads[index], numeric, f"{tensor.name}[{k}]")

        for name, state, analytic in (("h0", h0, dh0), ("c0", c0, dc0)):
            flat = state.reshape(-1)
            for k in range(flat.size):
                numeric = _numeric(loss, flat, k)
                _assert_close(analytic[k], numeric, f"{name}[{k}]")
