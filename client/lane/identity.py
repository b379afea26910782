"""Which user this process runs as, as it declares it for lanes (PROTOCOL.md §3.10).

A worker declares it at READY, a client when it asks for a lane; the broker offers a lane
only to a client and worker of the same uid (:func:`client.wire.lanes.user_refusal`).
Tests that need another user's declaration replace :func:`user_identity` in the client's
process (``monkeypatch.setattr(client.lane.identity, "user_identity", ...)``); there is
no environment override, so a process does not declare another user by accident.
"""

from __future__ import annotations

import os

from client.wire.frames import PeerUser


def user_identity() -> PeerUser:
    """This process's effective uid, and its groups, the effective gid first.

    >>> u = user_identity()
    >>> u.uid == os.geteuid() and u.gids[0] == os.getegid()
    True
    """
    egid = os.getegid()
    others = sorted(set(os.getgroups()) - {egid})
    return PeerUser(os.geteuid(), (egid, *others))
