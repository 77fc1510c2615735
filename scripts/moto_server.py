#!/usr/bin/env python3
"""opsd's moto launcher: the one place where moto is extended to behave as AWS documents.

moto has no plugin mechanism, so extensions are applied here, before the server starts, by adding
methods to a service's response class or patching backend methods. The version is pinned in
scripts/requirements-sandbox.txt because this file touches moto internals.

Extensions so far: none are needed by `opsd run` (DescribeInstances behaves as AWS does). The
lifecycle and capacity features add theirs here.
"""
import sys

from moto.server import main

if __name__ == "__main__":
    main(sys.argv[1:])
