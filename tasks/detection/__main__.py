"""``python -m tasks.detection fit|validate|test|predict``: see ``tasks.detection.module``."""

from __future__ import annotations

if __name__ == "__main__":
    # Import through the package (not this __main__ file) so that classes are named
    # tasks.detection.module.* in saved configs and checkpoints.
    from tasks.detection.module import main

    main()
