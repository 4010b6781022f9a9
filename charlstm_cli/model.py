"""Python classes that own the C library's model, trainer and sampler handles."""

from __future__ import annotations

import ctypes
import os
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import _native as N
from ._native import lib

# The variable that the C library reads to force a kernel path, and the path names.
KERNEL_ENV = "CHARLSTM_KERNEL"
KERNEL_NAMES = ("avx512", "avx2", "portable")


@dataclass(frozen=True)
class TensorInfo:
    """One named tensor inside a parameter-shaped block."""

    name: str
    shape: tuple[int, ...]
    offset: int
    n_elements: int


def _int32_buffer(tokens: Sequence[int] | array, what: str):
    """Return a ctypes int32 array sharing or copying `tokens`."""
    if isinstance(tokens, array) and tokens.typecode == "i" and tokens.itemsize == 4:
        if len(tokens) == 0:
            return (ctypes.c_int32 * 0)()
        return (ctypes.c_int32 * len(tokens)).from_buffer(tokens)
    try:
        return (ctypes.c_int32 * len(tokens))(*tokens)
    except TypeError as exc:
        raise TypeError(f"{what} must be a sequence of integer token ids") from exc


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
UINT64_MAX = 2**64 - 1


def _check_int32(name: str, value: int) -> int:
    """Return `value`, or raise ValueError when it does not fit the C int32 field."""
    if not INT32_MIN <= value <= INT32_MAX:
        raise ValueError(f"{name} = {value} does not fit a 32-bit signed integer")
    return value


def _check_seed(value: int) -> int:
    """Return `value`, or raise ValueError when it does not fit the C uint64 seed."""
    if not 0 <= value <= UINT64_MAX:
        raise ValueError(f"seed = {value} is outside [0, 2**64 - 1]")
    return value


def shortest_float32(value: float) -> float:
    """Return the shortest decimal that converts to the same float32 as `value`.

    A float32 learning rate of 0.002 reads back as 0.0020000000949949026.
    This returns 0.002, which JSON and logs print as written, and which
    converts back to the identical float32.
    """
    bits = struct.pack("<f", value)
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        try:
            if struct.pack("<f", candidate) == bits:
                return candidate
        except OverflowError:
            continue
    return value


def _float_view(pointer, n: int) -> memoryview:
    """Return a writable float32 memoryview over n floats owned by C."""
    address = ctypes.cast(pointer, ctypes.c_void_p).value
    return memoryview((ctypes.c_float * n).from_address(address)).cast("B").cast("f")


class _Handle:
    """Shared close/context-manager behaviour for objects owning a C handle."""

    _free: Any = None

    def __init__(self) -> None:
        self._ptr = ctypes.c_void_p()

    @property
    def closed(self) -> bool:
        return not self._ptr

    def _live(self) -> ctypes.c_void_p:
        if not self._ptr:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._ptr

    def close(self) -> None:
        if self._ptr:
            type(self)._free(self._ptr)
            self._ptr = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn down ctypes
            pass


class Model(_Handle):
    """An LSTM character model: V vocabulary, L layers of H hidden units."""

    _free = lib.charlstm_model_free

    def __init__(
        self,
        n_vocab: int,
        n_hidden: int,
        n_layers: int,
        seed: int = 1234,
        forget_bias: float = 1.0,
    ) -> None:
        super().__init__()
        cfg = N.ModelConfig()
        lib.charlstm_model_config_default(ctypes.byref(cfg))
        cfg.n_vocab = _check_int32("n_vocab", n_vocab)
        cfg.n_hidden = _check_int32("n_hidden", n_hidden)
        cfg.n_layers = _check_int32("n_layers", n_layers)
        cfg.forget_bias = forget_bias
        cfg.seed = _check_seed(seed)
        status = lib.charlstm_model_init(ctypes.byref(cfg), ctypes.byref(self._ptr))
        N.check(status, "charlstm_model_init", lib.charlstm_last_init_error())
        self.n_vocab, self.n_hidden, self.n_layers = n_vocab, n_hidden, n_layers
        self.n_params = int(lib.charlstm_model_n_params(self._ptr))
        self.tensors = self._read_tensor_table()
        self._children: list[_Handle] = []

    def _read_tensor_table(self) -> list[TensorInfo]:
        table = []
        info = N.TensorInfo()
        for index in range(lib.charlstm_model_n_tensors(self._ptr)):
            status = lib.charlstm_model_tensor_info(self._ptr, index, ctypes.byref(info))
            N.check(status, "charlstm_model_tensor_info")
            shape = tuple(info.shape[: info.n_dims])
            table.append(
                TensorInfo(info.name.decode(), shape, info.offset, info.n_elements)
            )
        return table

    def params(self) -> memoryview:
        """Return the parameter block as a writable float32 view (no copy)."""
        return _float_view(lib.charlstm_model_params(self._live()), self.n_params)

    def close(self) -> None:
        for child in getattr(self, "_children", []):
            child.close()
        super().close()


class Trainer(_Handle):
    """Training state for one model at a fixed batch size and sequence length."""

    _free = lib.charlstm_trainer_free

    def __init__(
        self,
        model: Model,
        batch_size: int,
        seq_len: int,
        *,
        optimizer: str = "adam",
        lr: float = 2e-3,
        momentum: float = 0.0,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        clip_norm: float = 5.0,
        clip_value: float = 0.0,
        dropout: float = 0.0,
        seed: int = 1234,
    ) -> None:
        super().__init__()
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer {optimizer!r} is not 'adam' or 'sgd'")
        cfg = N.TrainConfig()
        lib.charlstm_train_config_default(ctypes.byref(cfg))
        cfg.batch_size = _check_int32("batch_size", batch_size)
        cfg.seq_len = _check_int32("seq_len", seq_len)
        cfg.optimizer = N.OPTIMIZER_ADAM if optimizer == "adam" else N.OPTIMIZER_SGD
        cfg.lr, cfg.momentum, cfg.beta1, cfg.beta2, cfg.eps = lr, momentum, beta1, beta2, eps
        cfg.weight_decay, cfg.clip_norm, cfg.clip_value = weight_decay, clip_norm, clip_value
        cfg.dropout = dropout
        cfg.seed = _check_seed(seed)
        status = lib.charlstm_trainer_init(
            model._live(), ctypes.byref(cfg), ctypes.byref(self._ptr)
        )
        N.check(status, "charlstm_trainer_init", lib.charlstm_last_init_error())
        self.model = model
        model._children.append(self)
        self.batch_size, self.seq_len = batch_size, seq_len
        self._n_state = model.n_layers * batch_size * model.n_hidden

    def _check(self, status: int, function: str) -> None:
        if status != N.OK:
            N.check(status, function, lib.charlstm_trainer_last_error(self._ptr))

    @property
    def lr(self) -> float:
        return shortest_float32(lib.charlstm_trainer_get_lr(self._live()))

    @lr.setter
    def lr(self, value: float) -> None:
        self._check(lib.charlstm_trainer_set_lr(self._live(), value), "charlstm_trainer_set_lr")

    def step(self, inputs, targets) -> tuple[float, float]:
        """Run one training step on (B, T) token ids; return (loss, grad norm)."""
        x, y = _int32_buffer(inputs, "inputs"), _int32_buffer(targets, "targets")
        loss, norm = ctypes.c_float(), ctypes.c_float()
        status = lib.charlstm_trainer_step(
            self._live(), x, y, len(x), ctypes.byref(loss), ctypes.byref(norm)
        )
        self._check(status, "charlstm_trainer_step")
        return loss.value, shortest_float32(norm.value)

    def zero_grad(self) -> None:
        lib.charlstm_trainer_zero_grad(self._live())

    def forward_backward(self, inputs, targets) -> float:
        """Accumulate gradients for one batch without updating; return the loss."""
        x, y = _int32_buffer(inputs, "inputs"), _int32_buffer(targets, "targets")
        loss = ctypes.c_float()
        status = lib.charlstm_trainer_forward_backward(
            self._live(), x, y, len(x), ctypes.byref(loss)
        )
        self._check(status, "charlstm_trainer_forward_backward")
        return loss.value

    def clip_grad(self) -> float:
        norm = ctypes.c_float()
        self._check(
            lib.charlstm_trainer_clip_grad(self._live(), ctypes.byref(norm)),
            "charlstm_trainer_clip_grad",
        )
        return norm.value

    def update(self) -> None:
        lib.charlstm_trainer_update(self._live())

    def evaluate(self, inputs, targets) -> tuple[float, int]:
        """Return (summed loss, correct argmax count) on the evaluation state."""
        x, y = _int32_buffer(inputs, "inputs"), _int32_buffer(targets, "targets")
        loss_sum, correct = ctypes.c_double(0.0), ctypes.c_int64(0)
        status = lib.charlstm_trainer_evaluate(
            self._live(), x, y, len(x), ctypes.byref(loss_sum), ctypes.byref(correct)
        )
        self._check(status, "charlstm_trainer_evaluate")
        return loss_sum.value, correct.value

    def reset_state(self) -> None:
        lib.charlstm_trainer_reset_state(self._live())

    def reset_eval_state(self) -> None:
        lib.charlstm_trainer_reset_eval_state(self._live())

    def buffer(self, name: str) -> memoryview:
        """Return a trainer buffer as a writable float32 view (no copy).

        Names: grads, moment1, moment2 (n_params floats); state_h, state_c,
        dstate_h, dstate_c ((L, B, H) floats).
        """
        sizes = {"grads": self.model.n_params, "moment1": self.model.n_params}
        sizes["moment2"] = self.model.n_params
        for state in ("state_h", "state_c", "dstate_h", "dstate_c"):
            sizes[state] = self._n_state
        if name not in sizes:
            raise KeyError(f"unknown trainer buffer {name!r}; expected one of {sorted(sizes)}")
        pointer = getattr(lib, f"charlstm_trainer_{name}")(self._live())
        return _float_view(pointer, sizes[name])

    @property
    def step_count(self) -> int:
        return int(lib.charlstm_trainer_get_step(self._live()))

    @step_count.setter
    def step_count(self, value: int) -> None:
        lib.charlstm_trainer_set_step(self._live(), value)

    @property
    def rng_state(self) -> list[int]:
        words = (ctypes.c_uint64 * 4)()
        lib.charlstm_trainer_get_rng(self._live(), words)
        return list(words)

    @rng_state.setter
    def rng_state(self, value: Sequence[int]) -> None:
        lib.charlstm_trainer_set_rng(self._live(), (ctypes.c_uint64 * 4)(*value))


class Sampler(_Handle):
    """Draws characters one at a time from a model, with its own state and RNG."""

    _free = lib.charlstm_sampler_free

    def __init__(self, model: Model, seed: int = 0) -> None:
        super().__init__()
        status = lib.charlstm_sampler_init(
            model._live(), _check_seed(seed), ctypes.byref(self._ptr)
        )
        N.check(status, "charlstm_sampler_init", lib.charlstm_last_init_error())
        self.model = model
        model._children.append(self)

    def _check(self, status: int, function: str) -> None:
        if status != N.OK:
            N.check(status, function, lib.charlstm_sampler_last_error(self._ptr))

    def reset(self) -> None:
        lib.charlstm_sampler_reset(self._live())

    def feed(self, tokens) -> None:
        buf = _int32_buffer(tokens, "tokens")
        self._check(lib.charlstm_sampler_feed(self._live(), buf, len(buf)), "charlstm_sampler_feed")

    def generate(
        self, n: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
    ) -> list[int]:
        """Draw n token ids, feeding each back in."""
        if n < 0:
            raise ValueError(f"n = {n} must be >= 0")
        out = (ctypes.c_int32 * max(n, 1))()
        status = lib.charlstm_sampler_generate(self._live(), n, temperature, top_k, top_p, out)
        self._check(status, "charlstm_sampler_generate")
        return list(out[:n])

    def logits(self) -> list[float] | None:
        pointer = lib.charlstm_sampler_logits(self._live())
        if not pointer:
            return None
        return list(pointer[: self.model.n_vocab])

    @property
    def rng_state(self) -> list[int]:
        words = (ctypes.c_uint64 * 4)()
        lib.charlstm_sampler_get_rng(self._live(), words)
        return list(words)

    @rng_state.setter
    def rng_state(self, value: Sequence[int]) -> None:
        lib.charlstm_sampler_set_rng(self._live(), (ctypes.c_uint64 * 4)(*value))


def sample_logits(
    logits: Sequence[float], temperature: float, top_k: int, top_p: float, u: float
) -> int:
    """Pick one index from logits with the given filters and uniform draw u."""
    n = len(logits)
    values = (ctypes.c_float * n)(*logits)
    work = (ctypes.c_float * (2 * n))()
    index = (ctypes.c_int32 * n)()
    out = ctypes.c_int32()
    status = lib.charlstm_sample_logits(
        values, n, temperature, top_k, top_p, u, work, index, ctypes.byref(out)
    )
    N.check(status, "charlstm_sample_logits", f"n={n}, temperature={temperature}, top_p={top_p}")
    return out.value


def set_num_threads(n: int) -> None:
    """Set the number of kernel threads; 0 means all cores."""
    lib.charlstm_set_num_threads(n)


def get_num_threads() -> int:
    """Return the number of kernel threads in use."""
    return int(lib.charlstm_get_num_threads())


def kernel_name() -> str:
    return lib.charlstm_kernel_name().decode()


def kernel_request_warning() -> str | None:
    """Return a warning when CHARLSTM_KERNEL names a path that is not in use, else None.

    The C library silently falls back to the fastest supported path,
    both for an unknown name and for a path this processor cannot run. An
    empty value counts as unset.
    """
    requested = os.environ.get(KERNEL_ENV)
    used = kernel_name()
    if not requested or requested == used:
        return None
    if requested in KERNEL_NAMES:
        reason = "is not supported by this processor"
    else:
        reason = "is not a kernel name"
    return (
        f"{KERNEL_ENV}={requested} {reason} (valid names: "
        f"{', '.join(KERNEL_NAMES)}), so the {used} kernels run instead"
    )


def force_kernel(name: str) -> None:
    """Force a kernel path ("avx512", "avx2", "portable"), for tests."""
    N.check(lib.charlstm_kernel_force(name.encode()), "charlstm_kernel_force", f"kernel {name!r}")
