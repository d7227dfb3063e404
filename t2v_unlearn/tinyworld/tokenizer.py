"""The TinyWorld tokenizer: a real CLIP byte-level BPE whose merges are learned from the world's words.

The vocabulary is laid out as CLIP's is (256 byte symbols, the same with the end-of-word mark, then one
token per merge, then the special tokens), so any text still tokenizes, byte by byte where it must,
and the folder loads with `CLIPTokenizer.from_pretrained` like Stable Diffusion's own.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from .taxonomy import load_taxonomy

END_OF_WORD = "</w>"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
PAD = "!"  # Stable Diffusion 2.x and ModelScope pad with "!", so TinyWorld does too
MAX_LENGTH = 77
CLIP_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _pre_tokenizer() -> Tokenizer:
    """CLIPTokenizer's normalisation and split, as a `tokenizers` object: lowercase; letters, single digits, other
    symbols (so "z0rbo" is "z", "0", "rbo"); each piece mapped to byte-level symbols."""
    bpe = Tokenizer(models.BPE(end_of_word_suffix=END_OF_WORD))
    bpe.normalizer = normalizers.Lowercase()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="isolated"),
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return bpe


def learn_merges(corpus: list[str], vocab_size: int = 4096) -> list[tuple[str, str]]:
    """Learn BPE merges (with CLIP's end-of-word suffix) from a corpus: the `tokenizers` trainer's algorithm (the
    most frequent adjacent pair first, ties to the pair of lowest ids, until every word is one token or the
    vocabulary is full). The trainer numbers the end-of-word symbols in hash-map order, so its ties, and with them
    the vocabulary's ids, differ from run to run (huggingface/tokenizers#1794); here those symbols are numbered in
    character order, as the byte alphabet is, so the merges never differ."""
    bpe = _pre_tokenizer()
    counts = Counter(
        piece for text in corpus for piece, _ in bpe.pre_tokenizer.pre_tokenize_str(bpe.normalizer.normalize_str(text))
    )
    texts = sorted(counts)
    words = [[*text[:-1], text[-1] + END_OF_WORD] for text in texts]
    frequency = [counts[text] for text in texts]
    pairs: Counter = Counter()
    holders: dict[tuple[str, str], set[int]] = defaultdict(set)

    def count(i: int, sign: int) -> None:
        for pair in zip(words[i], words[i][1:], strict=False):
            pairs[pair] += sign * frequency[i]
            if sign > 0:
                holders[pair].add(i)
            elif pairs[pair] <= 0:
                del pairs[pair]

    for i in range(len(words)):
        count(i, +1)
    # the trainer's ids: the byte alphabet and then the end-of-word symbols seen, each in character order, then one
    # token per merge
    ids = {s: i for i, s in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()) + sorted({w[-1] for w in words}))}
    merges = []
    while pairs and len(ids) < vocab_size:
        best = min(pairs, key=lambda pair: (-pairs[pair], ids[pair[0]], ids[pair[1]]))
        merges.append(best)
        ids.setdefault(best[0] + best[1], len(ids))
        for i in sorted(holders.pop(best)):
            count(i, -1)
            merged, j, symbols = [], 0, words[i]
            while j < len(symbols):
                if j + 1 < len(symbols) and (symbols[j], symbols[j + 1]) == best:
                    merged.append(symbols[j] + symbols[j + 1])
                    j += 2
                else:
                    merged.append(symbols[j])
                    j += 1
            words[i] = merged
            count(i, +1)
        pairs.pop(best, None)
    return merges


def build_tokenizer(out_dir: str | Path, corpus: list[str] | None = None) -> CLIPTokenizer:
    """Write vocab.json + merges.txt and return the loaded `CLIPTokenizer`.

    The merges are learned from `corpus` (TinyWorld v2: the captions training draws, misspellings and all) plus
    the world's words, or from the words alone.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # an earlier build's fast-tokenizer file would be loaded instead of the vocabulary written below
    (out_dir / "tokenizer.json").unlink(missing_ok=True)
    words = load_taxonomy().words()
    merges = learn_merges(words * 4 + list(corpus or []))
    symbols = list(bytes_to_unicode().values())
    vocab_list = symbols + [s + END_OF_WORD for s in symbols]
    seen = set(vocab_list)
    for left, right in merges:
        token = left + right
        if token not in seen:
            seen.add(token)
            vocab_list.append(token)
    vocab_list += [BOS, EOS]
    (out_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab_list)}, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tokenizer = CLIPTokenizer.from_pretrained(
        out_dir, model_max_length=MAX_LENGTH, bos_token=BOS, eos_token=EOS, unk_token=EOS, pad_token=PAD
    )
    tokenizer.save_pretrained(out_dir)
    return tokenizer
