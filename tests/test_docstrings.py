"""Docstring examples run as tests."""

from __future__ import annotations

import doctest
import importlib

import pytest

# Modules whose examples run here (the others' need a live broker and are marked SKIP).
MODULES = [
    "broker.broker",
    "broker.model_store",
    "client.arguments",
    "client.messages",
    "control_sim.checks",
    "control_sim.qpu_service",
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
