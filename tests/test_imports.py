"""Every module of the package imports in a fresh environment (a missing dependency fails here), and the
modules that check user input do so without importing torch, diffusers or transformers."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import attentionflow

MODULES = sorted(m.name for m in pkgutil.walk_packages(attentionflow.__path__, prefix="attentionflow.")
                 if m.name != "attentionflow.__main__")  # __main__ runs the CLI


def test_the_walk_finds_the_package():
    assert {
        "attentionflow.commands.cli",
        "attentionflow.pipeline",
        "attentionflow.toyworld.judge",
        "attentionflow.commands.webapp",
    } <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports(module):
    assert importlib.import_module(module).__name__ == module


LIGHT = [
    "attentionflow.commands.cli",
    "attentionflow.config",
    "attentionflow.jobs",
    "attentionflow.io.video",
    "attentionflow.flow.motion",
    "attentionflow.models.paths",
    "attentionflow.resources",
    "attentionflow.commands.batch",
    "attentionflow.commands.webapp",
    "attentionflow.toyworld.judge",
]


@pytest.mark.parametrize("module", LIGHT)
def test_input_checking_modules_do_not_import_the_model_stack(module):
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
