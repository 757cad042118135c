from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def humanml3d_fixture() -> Path:
    """The real HumanML3D clip 012314 with the real Mean/Std."""
    return DATA / "humanml3d"
