"""The smoke tests of bench/ share bench_kit (put on sys.path here)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
