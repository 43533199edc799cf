"""Test aids for memory: a tiny deterministic embedder and a writer process to kill.

Run as a script, it commits memories to ``DB`` forever and prints each id (flushed) only
after the commit returned, so whoever kills it knows which memories must have survived:

    python tests/memory/_writer.py DB TAG [NORMAL|FULL]
"""

from __future__ import annotations

import hashlib
import random
import re
import sys
import warnings

import numpy as np


class WordHashEmbedder:
    """Each word hashed to a signed slot; texts sharing words get similar vectors."""

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.model_id = f"test-word-hash-{dim}"
        self.calls = 0

    async def aembed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
                out[row, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


WORDS = [f"w{n:04d}" for n in range(5000)]


def text_for(tag: str, i: int, rng: random.Random) -> str:
    return f"writer {tag} memory {i} " + " ".join(rng.choices(WORDS, k=6))


def main(argv: list[str]) -> None:
    from aillm_lab.db import SqliteVersionWarning
    from aillm_lab.memory.long_term import LongTermMemory
    from aillm_lab.runtime import LoopRunner

    warnings.simplefilter("ignore", SqliteVersionWarning)
    db, tag = argv[0], argv[1]
    sync = argv[2] if len(argv) > 2 else "NORMAL"
    rng = random.Random(tag)
    mem = LongTermMemory(db_path=db, embedder=WordHashEmbedder(), synchronous=sync,  # type: ignore[arg-type]
                         runner=LoopRunner("writer-loop"), checkpoint_every=50)
    i = 0
    while True:
        if i % 4 == 3:  # every fourth commit is a batch of three
            texts = [text_for(tag, i + j, rng) for j in range(3)]
            ids = [m.id for m in mem.add_many(texts, importance=0.7)]
            i += 3
        else:
            ids = [mem.add(text_for(tag, i, rng)).id]
            i += 1
        sys.stdout.write("".join(f"{mid}\n" for mid in ids))
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
