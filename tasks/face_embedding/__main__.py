"""``python -m tasks.face_embedding fit|validate|test|predict`` (the task CLI, ``module.py``) and
``python -m tasks.face_embedding index build|add|remove|search`` (the faiss face index, ``index_cli.py``)."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # Import through the package (not this __main__ file) so that classes are named
    # tasks.face_embedding.module.* in saved configs and checkpoints.
    if sys.argv[1:2] == ["index"]:
        from tasks.face_embedding.index_cli import main as index_main

        index_main(sys.argv[2:])
    else:
        from tasks.face_embedding.module import main

        main()
