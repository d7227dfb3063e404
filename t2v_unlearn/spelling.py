"""Spelling variants of a word: what people type instead of a concept's name.

Shared by TinyWorld's captions (the world is trained on misspelt names, so a leak through one means something),
erase's training prompts and the misspelling attack.
"""

from __future__ import annotations

import numpy as np

LOOKALIKES = {"o": "0", "i": "1", "l": "1", "e": "3", "a": "4", "s": "5", "b": "8"}
# the draws (`spelling_variants` seeds) erase trains on; the misspelling attacks (eval's and the development split's)
# never use a variant of these
TRAINING_SEEDS = range(8)


def spelling_variants(word: str, count: int = 6, seed: int = 0) -> list[str]:
    """Misspellings of a concept name: a dropped, a doubled and a swapped letter, a digit look-alike, case.

    Deterministic for a seed; never the word itself. The CLIP tokenizer lower-cases, so case variants only matter
    for tokenizers that keep case.
    """
    rng = np.random.default_rng(seed)
    candidates = []
    if len(word) > 3:
        i = int(rng.integers(1, len(word)))
        candidates.append(word[:i] + word[i + 1 :])  # dropped
    i = int(rng.integers(len(word)))
    candidates.append(word[: i + 1] + word[i] + word[i + 1 :])  # doubled
    if len(word) > 2:
        i = int(rng.integers(len(word) - 1))
        candidates.append(word[:i] + word[i + 1] + word[i] + word[i + 2 :])  # swapped
    swaps = [i for i, c in enumerate(word) if c in LOOKALIKES]
    if swaps:
        i = swaps[int(rng.integers(len(swaps)))]
        candidates.append(word[:i] + LOOKALIKES[word[i]] + word[i + 1 :])  # digit look-alike
    candidates += [word.capitalize(), word.upper()]
    out = [c for c in dict.fromkeys(candidates) if c != word]
    return out[:count]


def training_variants(word: str, draws: int = len(TRAINING_SEEDS)) -> list[str]:
    """The spelling variants erase trains on: those of the first `draws` training seeds, in order, without repeats
    (one draw holds one variant of each kind; more draws hold more of the letters a user may drop or swap)."""
    if not 0 <= draws <= len(TRAINING_SEEDS):
        raise ValueError(f"draws must be between 0 and {len(TRAINING_SEEDS)}, got {draws}")
    variants = [v for seed in TRAINING_SEEDS[:draws] for v in spelling_variants(word, seed=seed)]
    return list(dict.fromkeys(variants))


def misspell(word: str, rng: np.random.Generator) -> str:
    """One random misspelling of `word` (not a case change), drawn with `rng`."""
    variants = [v for v in spelling_variants(word, seed=int(rng.integers(2**31))) if v.lower() != word.lower()]
    return variants[int(rng.integers(len(variants)))] if variants else word
