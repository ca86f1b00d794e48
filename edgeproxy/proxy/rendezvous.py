"""Parent selection by weighted rendezvous (highest-random-weight) hashing. Pure: no I/O.

Contract: :func:`rendezvous_order` ranks parents for one key. Every node that ranks the same
parents (same identities and weights) for the same key gets the same order, so a key's
objects live on one parent of a tier and the tier's capacity adds up. Properties:

* stable: the order depends only on the key and the parents' identities and weights, never on
  the order the parents are listed in, nor on time;
* weighted: a parent is first for a share ``weight / sum(weights)`` of the keys (in
  expectation), using the logarithmic method of Schindelhauer and Schomaker (2005), the one
  Ceph's straw2 and Tengine use: ``score = weight / -ln(u)`` with ``u`` uniform in (0, 1);
* minimal disruption: taking a parent out (or adding one) moves only the keys it is (or
  becomes) first for; every other key keeps its parent. A caller that skips unavailable
  parents in the order gets the same property for failures: a failed parent's keys go to
  their next parent in their own order, spread over the remaining parents by weight.

The hash is ``xxh3_64(ident + b"\\0" + key)``: fast, well mixed, and the same on every
platform. ``ident`` is the parent's configured name (or its URL).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import xxhash

_TWO_64 = float(2**64)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One parent as the hash sees it: a stable identity and a weight > 0."""

    ident: bytes
    weight: float = 1.0


def score(key: bytes, candidate: Candidate) -> float:
    """The candidate's score for ``key``; the highest score wins.

    ``u = (h + 0.5) / 2**64`` lies strictly inside (0, 1), so ``-ln(u) > 0`` and the score is
    finite and positive for every hash value ``h``.
    """
    h = xxhash.xxh3_64_intdigest(candidate.ident + b"\0" + key)
    u = (h + 0.5) / _TWO_64
    return candidate.weight / -math.log(u)


def rendezvous_order(key: bytes, candidates: Sequence[Candidate]) -> list[int]:
    """Indexes into ``candidates``, best first, for ``key``.

    Ties (practically impossible with 64-bit hashes) are broken by the identity, so the order
    never depends on the order of ``candidates``. An empty sequence gives an empty list.
    """
    ranked = sorted(
        range(len(candidates)),
        key=lambda i: (score(key, candidates[i]), candidates[i].ident),
        reverse=True,
    )
    return ranked


def rendezvous_pick(key: bytes, candidates: Sequence[Candidate]) -> int:
    """The index of the first candidate for ``key``; ``ValueError`` when there is none."""
    if not candidates:
        raise ValueError("no candidates")
    return max(
        range(len(candidates)), key=lambda i: (score(key, candidates[i]), candidates[i].ident)
    )
