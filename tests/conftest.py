from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tag_map():
    from boiler_ai.plant.tagmap import load_tag_map

    return load_tag_map(ROOT / "opc" / "reference_unit.yaml")
