"""Shared fixtures: the real model from the shared folder (STARKV_SHARED_DIR,
default <repo>/../shared) and the C CLI (STARKV_CLI, default <build>/starkv)."""
import os
import pathlib

import pytest

import starkv

REPO = pathlib.Path(__file__).resolve().parents[3]
SHARED = pathlib.Path(os.environ.get("STARKV_SHARED_DIR", REPO.parent / "shared"))
MODEL_PATH = SHARED / "models" / "stories260K.gguf"
GOLDEN = SHARED / "golden" / "stories260K_greedy_from_bos_256.txt"
BUILD = pathlib.Path(os.environ.get("STARKV_BUILD_DIR", REPO / "build"))
CLI = pathlib.Path(os.environ.get("STARKV_CLI", BUILD / "starkv"))


@pytest.fixture(scope="session")
def model():
    assert MODEL_PATH.is_file(), f"missing test model {MODEL_PATH}"
    with starkv.Model(MODEL_PATH) as m:
        yield m


@pytest.fixture
def ctx(model):
    with model.context(n_ctx=512, n_threads=2) as c:
        yield c


def golden_text() -> str:
    text = GOLDEN.read_text(encoding="utf-8")
    return text[:-1] if text.endswith("\n") else text
