"""Hold a registry's writer lock until stdin closes (a test helper, not part of mlsys).

    python -m tests.continual.holder REGISTRY

Prints ``locked`` once it holds the lock, so a test knows when to start a second writer.
"""

from __future__ import annotations

import sys

from mlsys_cli.continual.registry import Registry

if __name__ == "__main__":
    with Registry(sys.argv[1]).writer():
        sys.stdout.write("locked\n")
        sys.stdout.flush()
        sys.stdin.read()
