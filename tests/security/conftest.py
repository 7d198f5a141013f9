import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("slimkit_security_build", Path(__file__).with_name("_build.py"))
build_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_module)


@pytest.fixture
def build():
    """The builders of hostile inputs (tests/security/_build.py)."""
    return build_module
