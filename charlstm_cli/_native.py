"""Load the charlstm C library and declare its functions for ctypes.

This module mirrors ``native/include/charlstm.h`` in header order and contains
nothing else: the loader, the struct mirrors and one declaration per function.
"""

from __future__ import annotations

import ctypes
import os
import sys
from ctypes import (
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_double,
    c_float,
    c_int32,
    c_int64,
    c_size_t,
    c_uint64,
    c_void_p,
)
from importlib import resources
from pathlib import Path

ABI_VERSION = 1
MAX_LAYERS = 8

OK = 0
INVALID_ARG = 1
NOMEM = 2
NONFINITE = 3

OPTIMIZER_SGD = 0
OPTIMIZER_ADAM = 1


class CharLSTMError(RuntimeError):
    """A call into the C library failed; the message carries its reason."""

    status = -1

    def __init__(self, function: str, message: str):
        super().__init__(f"{function}: {message}")
        self.function = function


class InvalidArgumentError(CharLSTMError, ValueError):
    status = INVALID_ARG


class OutOfMemoryError(CharLSTMError, MemoryError):
    status = NOMEM


class NonFiniteError(CharLSTMError, ArithmeticError):
    status = NONFINITE


class LibraryNotFoundError(FileNotFoundError):
    """The compiled library is missing or does not match this package.

    `hint`, when set, describes how to get a library that matches.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


_ERRORS = {e.status: e for e in (InvalidArgumentError, OutOfMemoryError, NonFiniteError)}


# ----------------------------------------------------------------------------
# structs, in header order


class ModelConfig(Structure):
    _fields_ = [
        ("n_vocab", c_int32),
        ("n_hidden", c_int32),
        ("n_layers", c_int32),
        ("forget_bias", c_float),
        ("seed", c_uint64),
    ]


class TrainConfig(Structure):
    _fields_ = [
        ("batch_size", c_int32),
        ("seq_len", c_int32),
        ("optimizer", c_int32),
        ("lr", c_float),
        ("momentum", c_float),
        ("beta1", c_float),
        ("beta2", c_float),
        ("eps", c_float),
        ("weight_decay", c_float),
        ("clip_norm", c_float),
        ("clip_value", c_float),
        ("dropout", c_float),
        ("seed", c_uint64),
    ]


class TensorInfo(Structure):
    _fields_ = [
        ("name", c_char * 32),
        ("n_dims", c_int32),
        ("shape", c_int32 * 2),
        ("offset", c_size_t),
        ("n_elements", c_size_t),
    ]


# ----------------------------------------------------------------------------
# loading


def _library_names() -> list[str]:
    if sys.platform == "win32":
        return ["charlstm.dll", "libcharlstm.dll"]
    if sys.platform == "darwin":
        return ["libcharlstm.dylib", "libcharlstm.so"]
    return ["libcharlstm.so"]


def _candidate_paths() -> list[Path]:
    override = os.environ.get("CHARLSTM_LIB")
    if override:
        # absolute, because the loader searches the system folders for a bare name
        return [Path(override).absolute()]
    # joinpath, not str() of the folder: an editable install returns a path over
    # two folders (the installed one with the library, and the checkout), whose
    # str() is not a path, while joinpath finds the file in either.
    package = resources.files("charlstm_cli")
    return [Path(str(package.joinpath(name))) for name in _library_names()]


def _rebuild_hint() -> str:
    """Return how to get a library that matches this package."""
    if os.environ.get("CHARLSTM_LIB"):
        return (
            "point CHARLSTM_LIB at a library built from this version with "
            "'cmake -S . -B build && cmake --build build', or unset it to use "
            "the installed library"
        )
    return "reinstall charlstm with 'pip install .' from the source folder"


def _load() -> tuple[ctypes.CDLL, Path]:
    """Load the first library found and return it with its path."""
    tried = _candidate_paths()
    for path in tried:
        if path.is_file():
            try:
                return ctypes.CDLL(str(path)), path
            except OSError as exc:
                raise LibraryNotFoundError(
                    f"cannot load the charlstm library {path}: {exc}",
                    hint=_rebuild_hint(),
                ) from exc
    listing = ", ".join(str(p) for p in tried)
    hint = (
        "reinstall with 'pip install .' from the source folder, or set CHARLSTM_LIB "
        "to a library built with 'cmake -S . -B build && cmake --build build'"
    )
    source_tree = tried[0].parent.parent / "pyproject.toml"
    if os.environ.get("CHARLSTM_LIB"):
        hint = _rebuild_hint()
    elif source_tree.is_file():
        # `python -m pytest` puts the checkout first on sys.path, ahead of the install
        hint = (
            f"charlstm_cli was imported from the source checkout {tried[0].parent}, "
            "which has no compiled library, so run plain 'pytest' (not 'python -m "
            "pytest') against the installed package, or set CHARLSTM_LIB"
        )
    raise LibraryNotFoundError(
        f"the charlstm C library was not found (searched: {listing})", hint=hint
    )


lib, library_path = _load()


def _declare(name: str, restype, argtypes: list) -> None:
    try:
        fn = getattr(lib, name)
    except AttributeError:
        raise LibraryNotFoundError(
            f"the library {library_path} has no function {name}, so it is not "
            "a charlstm library or was built from another version",
            hint=_rebuild_hint(),
        ) from None
    fn.restype = restype
    fn.argtypes = argtypes


_status = c_int32
_model_p = c_void_p
_trainer_p = c_void_p
_sampler_p = c_void_p
_i32_p = POINTER(c_int32)
_f32_p = POINTER(c_float)
_u64_p = POINTER(c_uint64)

# library
_declare("charlstm_abi_version", c_int32, [])
_declare("charlstm_version", c_char_p, [])
_declare("charlstm_sizeof", c_size_t, [c_char_p])
_declare("charlstm_status_str", c_char_p, [_status])
_declare("charlstm_kernel_name", c_char_p, [])
_declare("charlstm_kernel_force", _status, [c_char_p])
_declare("charlstm_set_num_threads", None, [c_int32])
_declare("charlstm_get_num_threads", c_int32, [])
_declare("charlstm_measure_peak_gflops", c_double, [c_int32, c_double])

# model
_declare("charlstm_model_config_default", None, [POINTER(ModelConfig)])
_declare("charlstm_model_init", _status, [POINTER(ModelConfig), POINTER(_model_p)])
_declare("charlstm_model_free", None, [_model_p])
_declare("charlstm_last_init_error", c_char_p, [])
_declare("charlstm_model_get_config", None, [_model_p, POINTER(ModelConfig)])
_declare("charlstm_model_n_params", c_size_t, [_model_p])
_declare("charlstm_model_params", _f32_p, [_model_p])
_declare("charlstm_model_n_tensors", c_int32, [_model_p])
_declare("charlstm_model_tensor_info", _status, [_model_p, c_int32, POINTER(TensorInfo)])

# trainer
_declare("charlstm_train_config_default", None, [POINTER(TrainConfig)])
_declare(
    "charlstm_trainer_init",
    _status,
    [_model_p, POINTER(TrainConfig), POINTER(_trainer_p)],
)
_declare("charlstm_trainer_free", None, [_trainer_p])
_declare("charlstm_trainer_last_error", c_char_p, [_trainer_p])
_declare("charlstm_trainer_set_lr", _status, [_trainer_p, c_float])
_declare("charlstm_trainer_get_lr", c_float, [_trainer_p])
_declare(
    "charlstm_trainer_step",
    _status,
    [_trainer_p, _i32_p, _i32_p, c_size_t, _f32_p, _f32_p],
)
_declare("charlstm_trainer_zero_grad", None, [_trainer_p])
_declare(
    "charlstm_trainer_forward_backward",
    _status,
    [_trainer_p, _i32_p, _i32_p, c_size_t, _f32_p],
)
_declare("charlstm_trainer_clip_grad", _status, [_trainer_p, _f32_p])
_declare("charlstm_trainer_update", None, [_trainer_p])
_declare(
    "charlstm_trainer_evaluate",
    _status,
    [_trainer_p, _i32_p, _i32_p, c_size_t, POINTER(c_double), POINTER(c_int64)],
)
_declare("charlstm_trainer_reset_state", None, [_trainer_p])
_declare("charlstm_trainer_reset_eval_state", None, [_trainer_p])
for _buffer in ("grads", "moment1", "moment2", "state_h", "state_c", "dstate_h", "dstate_c"):
    _declare(f"charlstm_trainer_{_buffer}", _f32_p, [_trainer_p])
_declare("charlstm_trainer_get_step", c_int64, [_trainer_p])
_declare("charlstm_trainer_set_step", None, [_trainer_p, c_int64])
_declare("charlstm_trainer_get_rng", None, [_trainer_p, _u64_p])
_declare("charlstm_trainer_set_rng", None, [_trainer_p, _u64_p])

# sampler
_declare("charlstm_sampler_init", _status, [_model_p, c_uint64, POINTER(_sampler_p)])
_declare("charlstm_sampler_free", None, [_sampler_p])
_declare("charlstm_sampler_last_error", c_char_p, [_sampler_p])
_declare("charlstm_sampler_reset", None, [_sampler_p])
_declare("charlstm_sampler_feed", _status, [_sampler_p, _i32_p, c_size_t])
_declare(
    "charlstm_sampler_generate",
    _status,
    [_sampler_p, c_size_t, c_float, c_int32, c_float, _i32_p],
)
_declare("charlstm_sampler_logits", _f32_p, [_sampler_p])
_declare("charlstm_sampler_get_rng", None, [_sampler_p, _u64_p])
_declare("charlstm_sampler_set_rng", None, [_sampler_p, _u64_p])
_declare(
    "charlstm_sample_logits",
    _status,
    [_f32_p, c_int32, c_float, c_int32, c_float, c_float, _f32_p, _i32_p, _i32_p],
)


def _check_abi() -> None:
    version = lib.charlstm_abi_version()
    if version != ABI_VERSION:
        raise LibraryNotFoundError(
            f"the charlstm library {library_path} has ABI version {version}, but "
            f"this package expects {ABI_VERSION}",
            hint=_rebuild_hint(),
        )
    for name, struct in (
        ("model_config", ModelConfig),
        ("train_config", TrainConfig),
        ("tensor_info", TensorInfo),
    ):
        native = lib.charlstm_sizeof(name.encode())
        if native != ctypes.sizeof(struct):
            raise LibraryNotFoundError(
                f"struct {name} is {native} bytes in the library {library_path}, "
                f"but {ctypes.sizeof(struct)} in this package",
                hint=_rebuild_hint(),
            )


_check_abi()


def check(status: int, function: str, detail: bytes | str | None = None) -> None:
    """Raise the exception for a non-OK status, with the library's message."""
    if status == OK:
        return
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    reason = lib.charlstm_status_str(status).decode()
    message = f"{reason}: {detail}" if detail else reason
    raise _ERRORS.get(status, CharLSTMError)(function, message)
