"""The maps tests' weight-planting constructions (tests/maps/maps_helpers.py) build the end-to-end
test's model of known evidence; one copy of them, imported from their folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "maps"))
