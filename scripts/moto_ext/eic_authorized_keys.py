#!/usr/bin/python3
"""sshd's AuthorizedKeysCommand in the sandbox: the keys EC2 Instance Connect holds for this connection.

EC2 Instance Connect's agent on an instance reads the keys pushed with SendSSHPublicKey from the
instance metadata service. The sandbox's instances share one sshd per 16 addresses, so this asks the
moto extension for the keys of the running instance whose private address the client connected to.
Installed by scripts/sandbox (sshd runs it only from a root-owned path no one else can write), run
as `eic_authorized_keys.py MOTO_URL %u ADDRESS` from a `Match LocalAddress ADDRESS` block (sshd 9.2
has no token for the local address).
Prints nothing (no key) when moto cannot be reached: sshd then refuses, as on an instance whose
metadata service does not answer.
"""
import sys
import urllib.parse
import urllib.request


def main():
    if len(sys.argv) != 4:
        return
    url, user, address = sys.argv[1:]
    query = urllib.parse.urlencode({"address": address, "user": user})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/moto-ext/instance-connect/keys?{query}", timeout=5) as r:
            sys.stdout.write(r.read().decode())
    except OSError:
        pass


main()
