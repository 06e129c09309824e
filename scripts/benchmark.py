"""The benchmark moved to the ``benchmarks`` package: ``python -m benchmarks``; this keeps the old command working."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root, where ``benchmarks`` lives
from benchmarks.__main__ import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
