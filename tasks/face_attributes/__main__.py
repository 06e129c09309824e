"""``python -m tasks.face_attributes fit|validate|test|predict``: see ``tasks.face_attributes.module``."""

from __future__ import annotations

if __name__ == "__main__":
    # Import through the package (not this __main__ file) so that classes are named
    # tasks.face_attributes.module.* in saved configs and checkpoints.
    from tasks.face_attributes.module import main

    main()
