import os
from pathlib import Path

# trio (pulled in by selenium) registers a Hypothesis entry-point plugin that fails to load under pytest's
# assertion rewriting when Hypothesis is first imported at the end of the session; we need no plugins.
os.environ.setdefault("HYPOTHESIS_NO_PLUGINS", "1")

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tag_map():
    from boiler_ai.tagmap import load_tag_map

    return load_tag_map(ROOT / "opc" / "reference_unit.yaml")
