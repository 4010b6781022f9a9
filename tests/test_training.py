"""Training behaviour of the engine: learning, optimizers, clipping,
determinism, threads and sampling."""

from __future__ import annotations

import math
from array import array

import numpy as np
import pytest

from charlstm_cli.model import (
    Model,
    Sampler,
    Trainer,
    force_kernel,
    kernel_name,
    sample_logits,
    set_num_threads,
)
from engine_helpers import KERNEL_PATHS, as_array, random_tokens, use_kernel

TEXT = "the quick brown fox jumps over the lazy dog. "


def _encode(text: str) -> tuple[list[str], list[int]]:
    vocab = sorted(set(text))
    index = {ch: k for k, ch in enumerate(vocab)}
    return vocab, [index[ch] for ch in text]


def _stream_batches(ids: list[int], batch: int, steps: int):
    """Yield (inputs, targets) from `batch` streams through a repeated text."""
    data = ids * 200
    span = len(data) // batch
    position = 0
    while position + steps + 1 <= span:
        inputs, targets = array("i"), array("i")
        for b in range(batch):
            start = b * span + position
            inputs.extend(data[start : start + steps])
            targets.extend(data[start + 1 : start + steps + 1])
        yield inputs, targets
        position += steps


def test_loss_falls_near_zero_on_repeated_text():
    vocab, ids = _encode(TEXT)
    with Model(len(vocab), 32, 2, seed=3) as model:
        trainer = Trainer(model, 4, 16, lr=1e-2)
        losses = []
        for _ in range(3):
            losses += [trainer.step(x, y)[0] for x, y in _stream_batches(ids, 4, 16)]
    assert len(losses) >= 300
    assert losses[0] > 2.5
    assert losses[-1] < 0.05


def test_greedy_sample_reproduces_learned_text():
    vocab, ids = _encode(TEXT)
    with Model(len(vocab), 32, 1, seed=4) as model:
        trainer = Trainer(model, 4, 16, lr=1e-2)
        for x, y in _stream_batches(ids, 4, 16):
            trainer.step(x, y)
        sampler = Sampler(model, seed=0)
        sampler.feed(ids[:10])
        out = sampler.generate(len(TEXT), temperature=0.0)
    text = "".join(vocab[k] for k in out)
    assert text == (TEXT * 3)[10 : 10 + len(TEXT)]


def _run(seed: int, steps: int = 5, dropout: float = 0.0):
    rng = np.random.default_rng(0)
    with Model(13, 10, 2, seed=seed) as model:
        trainer = Trainer(model, 3, 7, dropout=dropout, seed=seed)
        losses = []
        for _ in range(steps):
            x, y = random_tokens(rng, 13, 3, 7)
            losses.append(trainer.step(x.ravel().tolist(), y.ravel().tolist())[0])
        params = model.params().tobytes()
        sampler = Sampler(model, seed=seed)
        sampler.feed([1, 2, 3])
        sample = sampler.generate(50, temperature=1.0)
    return params, losses, sample


def test_same_seed_gives_identical_run():
    first, second = _run(seed=11, dropout=0.3), _run(seed=11, dropout=0.3)
    assert first[0] == second[0]
    assert first[1] == second[1]
    assert first[2] == second[2]


def test_different_seed_gives_different_run():
    first, second = _run(seed=11), _run(seed=12)
    assert first[0] != second[0]
    assert first[2] != second[2]


def test_dropout_changes_training():
    assert _run(seed=11, dropout=0.0)[1] != _run(seed=11, dropout=0.5)[1]


def test_thread_counts_agree_and_repeat():
    results = {}
    for threads in (1, 2, 2):
        set_num_threads(threads)
        try:
            _, losses, _ = _run(seed=5, steps=3)
        finally:
            set_num_threads(0)
        results.setdefault(threads, []).append(losses)
    assert results[2][0] == results[2][1]
    # threads split outputs, never a sum, so the count does not change a bit
    assert results[1][0] == results[2][0]


def _wide_run(batch: int, hidden: int) -> tuple[bytes, list[float]]:
    """Train 2 steps of a 2-layer model on a (batch, 4) window."""
    rng = np.random.default_rng(1)
    with Model(29, hidden, 2, seed=1) as model:
        trainer = Trainer(model, batch, 4)
        losses = []
        for _ in range(2):
            x, y = random_tokens(rng, 29, batch, 4)
            losses.append(trainer.step(x.ravel().tolist(), y.ravel().tolist())[0])
        return model.params().tobytes(), losses


# At (16, 512) each step splits its cell rows and product columns over the
# threads. At (32, 64) each thread runs the time loop on 16 batch rows.
@pytest.mark.parametrize("batch, hidden", [(16, 512), (32, 64)])
@pytest.mark.parametrize("kernel", KERNEL_PATHS)
def test_thread_counts_agree_when_work_splits(kernel, batch, hidden):
    previous = kernel_name()
    use_kernel(kernel)
    results = []
    try:
        for threads in (1, 2, 2):
            set_num_threads(threads)
            results.append(_wide_run(batch, hidden))
    finally:
        set_num_threads(0)
        force_kernel(previous)
    assert results[1][1] == results[2][1]
    assert results[1][0] == results[2][0]
    # the bias and input-row gradient sums run over rows in the same order
    # whatever the thread count
    assert results[0][1] == results[1][1]
    assert results[0][0] == results[1][0]


# ----------------------------------------------------------------------------
# optimizers and clipping against hand-computed updates


def _grads_then_update(trainer, model, x, y):
    before = as_array(model.params()).copy()
    trainer.zero_grad()
    trainer.forward_backward(x, y)
    trainer.clip_grad()
    grads = as_array(trainer.buffer("grads")).copy()
    trainer.update()
    return before, grads, as_array(model.params()).copy()


def test_adam_matches_hand_computed_update():
    lr, b1, b2, eps, wd = 0.01, 0.8, 0.9, 1e-6, 0.1
    rng = np.random.default_rng(1)
    with Model(6, 4, 1, seed=2) as model:
        trainer = Trainer(
            model, 2, 3, lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd, clip_norm=0
        )
        m = np.zeros(model.n_params)
        v = np.zeros(model.n_params)
        for step in (1, 2):
            x, y = random_tokens(rng, 6, 2, 3)
            p, g, after = _grads_then_update(trainer, model, x.ravel().tolist(), y.ravel().tolist())
            p, g = p.astype(np.float64), g.astype(np.float64)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1**step), v / (1 - b2**step)
            expected = p - lr * (m_hat / (np.sqrt(v_hat) + eps) + wd * p)
            np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-6)
        assert trainer.step_count == 2


def test_sgd_momentum_matches_hand_computed_update():
    lr, mu, wd = 0.5, 0.9, 0.01
    rng = np.random.default_rng(2)
    with Model(6, 4, 1, seed=2) as model:
        trainer = Trainer(
            model, 2, 3, optimizer="sgd", lr=lr, momentum=mu, weight_decay=wd, clip_norm=0
        )
        velocity = np.zeros(model.n_params)
        for _ in range(2):
            x, y = random_tokens(rng, 6, 2, 3)
            p, g, after = _grads_then_update(trainer, model, x.ravel().tolist(), y.ravel().tolist())
            p, g = p.astype(np.float64), g.astype(np.float64)
            velocity = mu * velocity + g + wd * p
            np.testing.assert_allclose(after, p - lr * velocity, rtol=1e-5, atol=1e-7)


def test_clip_by_global_norm_returns_pre_clip_norm():
    rng = np.random.default_rng(3)
    with Model(6, 4, 2, seed=2) as model:
        trainer = Trainer(model, 2, 3, clip_norm=0.01)
        x, y = random_tokens(rng, 6, 2, 3)
        trainer.zero_grad()
        trainer.forward_backward(x.ravel().tolist(), y.ravel().tolist())
        raw = as_array(trainer.buffer("grads")).astype(np.float64)
        expected_norm = float(np.sqrt((raw * raw).sum()))
        assert expected_norm > 0.01
        norm = trainer.clip_grad()
        assert norm == pytest.approx(expected_norm, rel=1e-5)
        clipped = as_array(trainer.buffer("grads")).astype(np.float64)
        assert float(np.sqrt((clipped * clipped).sum())) == pytest.approx(0.01, rel=1e-4)
        np.testing.assert_allclose(clipped, raw * (0.01 / expected_norm), rtol=1e-4)


def test_clip_by_value_bounds_every_element():
    rng = np.random.default_rng(4)
    with Model(6, 4, 1, seed=2) as model:
        trainer = Trainer(model, 2, 3, clip_norm=0, clip_value=1e-3)
        x, y = random_tokens(rng, 6, 2, 3)
        trainer.zero_grad()
        trainer.forward_backward(x.ravel().tolist(), y.ravel().tolist())
        raw = as_array(trainer.buffer("grads")).copy()
        assert np.abs(raw).max() > 1e-3
        trainer.clip_grad()
        clipped = as_array(trainer.buffer("grads"))
        np.testing.assert_array_equal(clipped, np.clip(raw, -1e-3, 1e-3))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_step_equals_separate_calls(optimizer):
    """The fused step must update exactly like zero_grad, backward, clip, update."""
    rng = np.random.default_rng(6)
    batches = [random_tokens(rng, 9, 3, 4) for _ in range(3)]
    params = []
    for fused in (True, False):
        with Model(9, 8, 2, seed=4) as model:
            trainer = Trainer(
                model, 3, 4, optimizer=optimizer, momentum=0.5, clip_norm=0.05, clip_value=0.01
            )
            for x, y in batches:
                x, y = x.ravel().tolist(), y.ravel().tolist()
                if fused:
                    trainer.step(x, y)
                else:
                    trainer.zero_grad()
                    trainer.forward_backward(x, y)
                    trainer.clip_grad()
                    trainer.update()
            params.append(model.params().tobytes())
    assert params[0] == params[1]


def test_evaluate_counts_loss_and_accuracy():
    rng = np.random.default_rng(5)
    with Model(6, 4, 1, seed=2) as model:
        trainer = Trainer(model, 2, 3)
        x, y = random_tokens(rng, 6, 2, 3)
        loss_sum, correct = trainer.evaluate(x.ravel().tolist(), y.ravel().tolist())
        trainer.reset_state()
        mean = trainer.forward_backward(x.ravel().tolist(), y.ravel().tolist())
        assert loss_sum == pytest.approx(6 * mean, rel=1e-5)
        assert 0 <= correct <= 6
        # the evaluation state carries over, so a second call differs
        second, _ = trainer.evaluate(x.ravel().tolist(), y.ravel().tolist())
        assert second != loss_sum
        trainer.reset_eval_state()
        third, _ = trainer.evaluate(x.ravel().tolist(), y.ravel().tolist())
        assert third == loss_sum


# ----------------------------------------------------------------------------
# sampling


LOGITS = [0.5, 2.0, -1.0, 1.5, 0.0, 1.9, -3.0]


def _softmax(logits, temperature=1.0):
    scaled = [z / temperature for z in logits]
    top = max(scaled)
    e = [math.exp(z - top) for z in scaled]
    return [x / sum(e) for x in e]


def test_temperature_zero_picks_argmax():
    for u in (0.0, 0.3, 0.999):
        assert sample_logits(LOGITS, 0.0, 0, 1.0, u) == 1


def test_temperature_one_matches_softmax():
    n = 20000
    counts = [0] * len(LOGITS)
    for k in range(n):
        counts[sample_logits(LOGITS, 1.0, 0, 1.0, (k + 0.5) / n)] += 1
    for count, p in zip(counts, _softmax(LOGITS)):
        assert count / n == pytest.approx(p, abs=2e-4)


def test_low_temperature_sharpens():
    n = 2000
    picks = [sample_logits(LOGITS, 0.25, 0, 1.0, (k + 0.5) / n) for k in range(n)]
    share = picks.count(1) / n
    assert share == pytest.approx(_softmax(LOGITS, 0.25)[1], abs=1e-3)
    assert share > _softmax(LOGITS)[1]


def test_top_k_stays_within_k_most_likely():
    order = sorted(range(len(LOGITS)), key=lambda k: -LOGITS[k])
    for k in (1, 2, 3):
        allowed = set(order[:k])
        seen = {sample_logits(LOGITS, 1.0, k, 1.0, (j + 0.5) / 500) for j in range(500)}
        assert seen == allowed


def test_top_p_keeps_smallest_prefix():
    probs = _softmax(LOGITS)
    order = sorted(range(len(LOGITS)), key=lambda k: -probs[k])
    top_p = probs[order[0]] + probs[order[1]] + 0.01
    seen = {sample_logits(LOGITS, 1.0, 0, top_p, (j + 0.5) / 500) for j in range(500)}
    assert seen == set(order[:3])


def test_sampler_rng_state_round_trip():
    with Model(9, 6, 1, seed=1) as model:
        sampler = Sampler(model, seed=42)
        sampler.feed([1, 2])
        saved = sampler.rng_state
        first = sampler.generate(30)
        sampler.reset()
        sampler.feed([1, 2])
        sampler.rng_state = saved
        assert sampler.generate(30) == first
