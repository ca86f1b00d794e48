"""Generated demo content shaped like the reference deployment's catalog.

Contract: :func:`catalog` is deterministic for a seed and returns ``(key, content_type, bytes,
cache_control)`` tuples: audio tracks of 3-8 MB, album art of 50-600 KB, small JSON API
documents. Bodies are pseudo-random (incompressible, like real audio and images), except JSON.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

MiB = 1024 * 1024
KiB = 1024


def catalog(
    seed: int = 7, tracks: int = 6, images: int = 8, api_docs: int = 8
) -> Iterator[tuple[str, str, bytes, str | None]]:
    rng = random.Random(seed)
    for i in range(tracks):
        size = rng.randint(3 * MiB, 8 * MiB)
        yield f"audio/track-{i:03d}.mp3", "audio/mpeg", rng.randbytes(size), None
    for i in range(images):
        size = rng.randint(50 * KiB, 600 * KiB)
        yield f"images/album-{i:03d}.webp", "image/webp", rng.randbytes(size), None
    for i in range(api_docs):
        doc = {
            "id": i,
            "title": f"Track {i}",
            "artist": f"Artist {rng.randint(1, 99)}",
            "duration_s": rng.randint(120, 420),
            "tags": [rng.choice(["rock", "jazz", "pop", "folk", "ambient"]) for _ in range(5)],
            "description": " ".join(rng.choice(["la", "da", "dum", "tee"]) for _ in range(200)),
        }
        yield (
            f"api/tracks/{i}.json",
            "application/json",
            json.dumps(doc, indent=1).encode(),
            "max-age=60",
        )
