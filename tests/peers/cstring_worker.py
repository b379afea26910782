"""A Majordomo worker that keeps the client address as a C string, as the zguide's C++
worker does (``examples/C++/mdwrkapi.hpp`` with ``zmsg.hpp``).

Like :mod:`tests.peers.mdp_rfc`, it imports nothing from nearloop. ``zmsg`` receives each
frame as bytes, except that a 17-byte frame starting with NUL (a libzmq-generated
identity) becomes the 33-character string ``"@"`` + 32 hex digits; ``zmsg::unwrap`` then
keeps the address as ``std::string((char*)frame.c_str())``, i.e. up to its first NUL; and
``zmsg::send`` turns a 33-byte part starting with ``@`` back into 17 bytes. An address with
a NUL in it is cut short and the reply cannot be matched; one that begins with NUL is
lost entirely (the C++ worker then aborts on ``assert (m_reply_to.size() != 0)``).
"""

from __future__ import annotations

import binascii

from tests.peers.mdp_rfc import PlainWorker


def zmsg_received(frame: bytes) -> bytes:
    """A frame as ``zmsg::recv`` stores it."""
    if len(frame) == 17 and frame[0] == 0:
        return b"@" + binascii.hexlify(frame[1:]).upper()
    return frame


def zmsg_sent(part: bytes) -> bytes:
    """A stored part as ``zmsg::send`` puts it on the wire."""
    if len(part) == 33 and part[:1] == b"@":
        return b"\0" + binascii.unhexlify(part[1:])
    return part


def c_string(part: bytes) -> bytes:
    """What ``(char*)part.c_str()`` holds: the bytes before the first NUL."""
    return part.split(b"\0")[0]


class CStringWorker(PlainWorker):
    """An RFC 7 or RFC 18 worker whose reply address is the REQUEST's address as the C++
    ``mdwrk`` keeps it: received by ``zmsg``, cut at its first NUL, sent by ``zmsg``."""

    def keep_address(self, address: bytes) -> bytes:
        return zmsg_sent(c_string(zmsg_received(address)))
