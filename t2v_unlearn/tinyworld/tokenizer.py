"""The TinyWorld tokenizer: a real CLIP byte-level BPE whose merges are learned from the world's words.

The vocabulary is laid out as CLIP's is (256 byte symbols, the same with the end-of-word mark, then one
token per merge, then the special tokens), so any text still tokenizes, byte by byte where it must,
and the folder loads with `CLIPTokenizer.from_pretrained` like Stable Diffusion's own.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from .taxonomy import load_taxonomy

END_OF_WORD = "</w>"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
PAD = "!"  # Stable Diffusion 2.x and ModelScope pad with "!", so TinyWorld does too
MAX_LENGTH = 77
CLIP_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def learn_merges(corpus: list[str]) -> list[tuple[str, str]]:
    """Learn BPE merges (with CLIP's end-of-word suffix) from a corpus, with the `tokenizers` trainer."""
    bpe = Tokenizer(models.BPE(end_of_word_suffix=END_OF_WORD))
    bpe.normalizer = normalizers.Lowercase()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [  # CLIPTokenizer's own split: letters, single digits, other symbols (so "z0rbo" is "z", "0", "rbo")
            pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="isolated"),
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix=END_OF_WORD,
    )
    bpe.train_from_iterator(corpus, trainer)
    merges = json.loads(bpe.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


def build_tokenizer(out_dir: str | Path, corpus: list[str] | None = None) -> CLIPTokenizer:
    """Write vocab.json + merges.txt and return the loaded `CLIPTokenizer`.

    The merges are learned from `corpus` (TinyWorld v2: the captions training draws, misspellings and all) plus
    the world's words, or from the words alone.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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
