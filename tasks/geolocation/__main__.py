"""``python -m tasks.geolocation partition ...`` (the partition command) or ``fit|validate|test|predict``."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # Import through the package (not this __main__ file) so that classes are named
    # tasks.geolocation.module.* in saved configs and checkpoints.
    if sys.argv[1:2] == ["partition"]:
        from tasks.geolocation.partition import main as partition_main

        partition_main(sys.argv[2:])
    else:
        from tasks.geolocation.module import main

        main()
