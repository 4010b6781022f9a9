"""The C API through the binding: lifecycle, metadata and argument checks."""

from __future__ import annotations

import ctypes
import math

import pytest

from charlstm_cli import _native as N
from charlstm_cli.model import Model, Sampler, Trainer, force_kernel, kernel_name


def test_abi_and_struct_sizes_match():
    assert N.lib.charlstm_abi_version() == N.ABI_VERSION
    assert N.lib.charlstm_sizeof(b"model_config") == ctypes.sizeof(N.ModelConfig)
    assert N.lib.charlstm_sizeof(b"train_config") == ctypes.sizeof(N.TrainConfig)
    assert N.lib.charlstm_sizeof(b"tensor_info") == ctypes.sizeof(N.TensorInfo)
    assert N.lib.charlstm_sizeof(b"no_such_struct") == 0


def test_library_found_in_editable_install(
    monkeypatch, tmp_path
):
    # an editable install spreads the package over the installed folder, which
    # contains the library, and the source checkout
    from importlib.readers import MultiplexedPath

    checkout, installed = tmp_path / "checkout", tmp_path / "installed"
    checkout.mkdir()
    installed.mkdir()
    names = N._library_names()
    for name in names:
        (installed / name).write_bytes(b"")
    spanning = MultiplexedPath(checkout, installed)
    monkeypatch.delenv("CHARLSTM_LIB", raising=False)
    monkeypatch.setattr(N.resources, "files", lambda package: spanning)
    assert N._candidate_paths() == [installed / name for name in names]


def test_library_version_matches_package():
    import charlstm_cli

    assert N.lib.charlstm_version().decode() == charlstm_cli.__version__


def test_status_strings():
    assert N.lib.charlstm_status_str(N.OK) == b"ok"
    assert N.lib.charlstm_status_str(N.INVALID_ARG) == b"invalid argument"
    assert N.lib.charlstm_status_str(99) == b"unknown status"


def test_tensor_table_layout():
    with Model(11, 5, 2) as model:
        names = [t.name for t in model.tensors]
        assert names == [
            "lstm.0.w_ih",
            "lstm.0.w_hh",
            "lstm.0.bias",
            "lstm.1.w_ih",
            "lstm.1.w_hh",
            "lstm.1.bias",
            "out.weight",
            "out.bias",
        ]
        shapes = {t.name: t.shape for t in model.tensors}
        assert shapes["lstm.0.w_ih"] == (11, 20)
        assert shapes["lstm.1.w_ih"] == (5, 20)
        assert shapes["out.weight"] == (5, 11)
        offsets = [t.offset for t in model.tensors]
        sizes = [t.n_elements for t in model.tensors]
        assert offsets == [sum(sizes[:k]) for k in range(len(sizes))]
        assert model.n_params == sum(sizes)


def test_initialisation_biases_and_scale():
    with Model(9, 8, 1, forget_bias=1.5) as model:
        params = model.params()
        table = {t.name: t for t in model.tensors}
        bias = table["lstm.0.bias"]
        values = params[bias.offset : bias.offset + bias.n_elements].tolist()
        assert values[:8] == [0.0] * 8  # input gate
        assert values[8:16] == [1.5] * 8  # forget gate
        assert values[16:] == [0.0] * 16  # output gate and candidate
        w = table["lstm.0.w_hh"]
        limit = math.sqrt(6.0 / (8 + 32))
        weights = params[w.offset : w.offset + w.n_elements].tolist()
        assert max(abs(x) for x in weights) <= limit
        assert max(abs(x) for x in weights) > 0.5 * limit


def test_double_close_and_use_after_close():
    model = Model(5, 4, 1)
    trainer = Trainer(model, 1, 2)
    model.close()
    assert trainer.closed  # closing a model closes what borrows it
    model.close()
    with pytest.raises(ValueError, match="closed"):
        model.params()
    with pytest.raises(ValueError, match="closed"):
        trainer.step([0, 1], [1, 2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_vocab": 0, "n_hidden": 4, "n_layers": 1}, "n_vocab = 0"),
        ({"n_vocab": 1, "n_hidden": 4, "n_layers": 1}, "n_vocab = 1"),
        ({"n_vocab": 5, "n_hidden": -3, "n_layers": 1}, "n_hidden = -3"),
        ({"n_vocab": 5, "n_hidden": 4, "n_layers": 0}, "n_layers = 0"),
        ({"n_vocab": 5, "n_hidden": 4, "n_layers": 9}, "n_layers = 9"),
    ],
)
def test_model_rejects_bad_sizes(kwargs, message):
    with pytest.raises(N.InvalidArgumentError, match=message):
        Model(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size = 0"),
        ({"seq_len": -1}, "seq_len = -1"),
        ({"lr": 0.0}, "lr = 0"),
        ({"lr": float("nan")}, "lr = nan"),
        ({"dropout": 1.0}, "dropout = 1"),
        ({"momentum": -0.5, "optimizer": "sgd"}, "momentum = -0.5"),
    ],
)
def test_trainer_rejects_bad_options(kwargs, message):
    options = {"batch_size": 2, "seq_len": 3, **kwargs}
    with Model(5, 4, 1) as model:
        with pytest.raises(N.InvalidArgumentError, match=message):
            Trainer(model, **options)


def test_trainer_rejects_unknown_optimizer():
    with Model(5, 4, 1) as model:
        with pytest.raises(ValueError, match="'rmsprop'"):
            Trainer(model, 1, 1, optimizer="rmsprop")


def test_step_rejects_wrong_buffer_length():
    with Model(5, 4, 1) as model:
        trainer = Trainer(model, 2, 3)
        with pytest.raises(N.InvalidArgumentError, match="hold 5 ids but"):
            trainer.step([0] * 5, [0] * 5)


@pytest.mark.parametrize("bad", [5, -1, 2**31 - 1])
def test_step_rejects_token_outside_vocabulary(bad):
    with Model(5, 4, 1) as model:
        trainer = Trainer(model, 1, 3)
        with pytest.raises(N.InvalidArgumentError, match=f"token id {bad}"):
            trainer.step([0, bad, 1], [1, 2, 3])
        with pytest.raises(N.InvalidArgumentError, match=f"token id {bad}"):
            trainer.evaluate([0, 1, 1], [1, 2, bad])


def test_sampler_rejects_bad_calls():
    with Model(5, 4, 1) as model:
        sampler = Sampler(model, seed=1)
        with pytest.raises(N.InvalidArgumentError, match="feed at least one token"):
            sampler.generate(3)
        with pytest.raises(N.InvalidArgumentError, match="token id 7"):
            sampler.feed([1, 7])
        sampler.feed([1, 2])
        with pytest.raises(N.InvalidArgumentError, match="temperature = -1"):
            sampler.generate(3, temperature=-1.0)
        with pytest.raises(N.InvalidArgumentError, match="temperature = nan"):
            sampler.generate(3, temperature=float("nan"))
        with pytest.raises(N.InvalidArgumentError, match="top_p = 0"):
            sampler.generate(3, top_p=0.0)
        with pytest.raises(ValueError, match="n = -2"):
            sampler.generate(-2)


def test_kernel_force_rejects_unknown_name():
    before = kernel_name()
    with pytest.raises(N.InvalidArgumentError, match="'sse9'"):
        force_kernel("sse9")
    assert kernel_name() == before


def test_non_finite_loss_leaves_parameters_unchanged():
    with Model(5, 4, 1) as model:
        trainer = Trainer(model, 1, 2)
        params = model.params()
        params[0] = float("nan")
        before = params.tobytes()
        with pytest.raises(N.NonFiniteError):
            trainer.step([0, 1], [1, 2])
        assert params.tobytes() == before
