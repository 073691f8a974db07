"""Benchmarks and studies, each printing its figures side by side. Run them from the repository root as modules,
`python -m bench.page`, so that this checkout's package is the one measured; the servers, browser and generated
photos are the tests' own (tests/browser.py, tests/corpus.py), put on the path here, once."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
