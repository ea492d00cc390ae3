"""Shared by the whole test session: one XLA compilation cache and one trained `:tiny` digits workdir.

XLA compilation dominates the suite on two cores. Every compiled program is written to a
persistent cache that lives for one session (a fresh directory, so the suite's time is measured
honestly) and is shared by every test process — pytest-xdist workers and the subprocesses that
train with several devices or processes — so a program compiled once is loaded everywhere else.
The tiny workdir is trained once per session and shared read-only; a test that changes it works on
a copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(ROOT, "configs", "image", "digits.py")
_CACHE_ENV = "MGT_TEST_XLA_CACHE"


def xla_cache_env(path: str) -> dict:
    """The environment that points JAX at the compilation cache `path` (for this process and children)."""
    return {"JAX_COMPILATION_CACHE_DIR": path, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


# Compile fast rather than run fast: the tests' models are tiny, so LLVM's optimisation of the CPU
# code costs far more than it saves (about half of each compile). This changes code generation only,
# not the computation: results agree with optimised builds to float rounding.
_TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def pytest_configure(config):
    if _TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_TEST_XLA_FLAGS}".strip()
    # The controller (or the only process) makes the cache directory; xdist workers and subprocesses
    # inherit the environment.
    if _CACHE_ENV not in os.environ:
        os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="mgt-test-xla-")
        config._mgt_owns_cache = True
    os.environ.update(xla_cache_env(os.environ[_CACHE_ENV]))
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    if getattr(config, "_mgt_owns_cache", False):
        shutil.rmtree(os.environ.pop(_CACHE_ENV), ignore_errors=True)


@pytest.hookimpl(optionalhook=True)  # without xdist (`-p no:xdist`) the hook does not exist
def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker more than cores — while a worker waits on a subprocess test or on the shared
    workdir's lock, the extra one keeps the cores busy."""
    return (os.cpu_count() or 1) + 1


def load_tiny_config(arg: str = "tiny"):
    import importlib.util

    spec = importlib.util.spec_from_file_location("digits_config", TINY_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@contextlib.contextmanager
def _lock(path: str):
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def trained_once(tmp_path_factory, name: str, config) -> str:
    """The workdir `name` trained with `config` once per session: xdist workers share it through a
    lock in the session's common temp folder (read-only; a test that changes it works on a copy)."""
    from mgt.training import train

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # common to all workers of this session
    path = os.path.join(str(shared), name)
    with _lock(path + ".lock"):
        if not os.path.exists(path + ".done"):
            shutil.rmtree(path, ignore_errors=True)
            train(config() if callable(config) else config, path, quiet=True)
            open(path + ".done", "w").close()
    return path


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory):
    """A digits workdir trained with `configs/image/digits.py:tiny` (6 + 6 steps, checkpoints every 2)."""
    return trained_once(tmp_path_factory, "digits_tiny", load_tiny_config)
