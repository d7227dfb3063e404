import json

from transformers import CLIPTokenizer

from t2v_unlearn.pipelines import tinyworld_path
from t2v_unlearn.tinyworld.taxonomy import load_taxonomy
from t2v_unlearn.tinyworld.tokenizer import build_tokenizer


def test_world_words_are_single_tokens_and_round_trip(tmp_path):
    tokenizer = build_tokenizer(tmp_path)
    for word in load_taxonomy().words():
        assert len(tokenizer.tokenize(word)) == 1, word
    text = "a picture of zorbo in striped style moving left"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_unknown_words_still_tokenize_byte_by_byte(tmp_path):
    tokenizer = build_tokenizer(tmp_path)
    tokens = tokenizer.tokenize("xylophone qwerty!")
    assert tokens and tokenizer.unk_token not in tokens
    assert tokenizer.decode(tokenizer("xylophone").input_ids, skip_special_tokens=True) == "xylophone"


def test_shipped_tokenizer_pads_like_sd2_to_77():
    tokenizer = CLIPTokenizer.from_pretrained(tinyworld_path("image") / "tokenizer")
    assert tokenizer.model_max_length == 77 and tokenizer.pad_token == "!"
    ids = tokenizer("zorbo", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[-1] == tokenizer.pad_token_id
    for name in ("vocab.json", "merges.txt"):  # older, slow tokenizers read these
        assert (tinyworld_path("image") / "tokenizer" / name).is_file()


def test_merges_learned_from_v2_captions_hold_misspellings_and_follow_clips_split(tmp_path):
    from t2v_unlearn.tinyworld.render import LANGUAGE_V2
    from t2v_unlearn.tinyworld.train import caption_corpus

    corpus = caption_corpus(LANGUAGE_V2, count=3000)
    tokenizer = build_tokenizer(tmp_path, corpus)
    words = {w for text in corpus for w in text.split()}
    misspelt = sorted(w for w in words if w.isalpha() and len(tokenizer.tokenize(w)) == 1
                      and w not in load_taxonomy().words())  # fmt: skip
    assert misspelt, "no misspelling of the corpus became a token"
    # CLIPTokenizer splits a digit from the letters around it before BPE; the merges are learned the same way
    assert tokenizer.tokenize("z0rbo")[:2] == ["z</w>", "0</w>"]
    assert all(any(ch.isdigit() for ch in t) <= (len(t.replace("</w>", "")) == 1) for t in tokenizer.get_vocab())


def test_the_v2_tokenizer_rebuilds_bit_for_bit_as_shipped(tmp_path):
    """The merges break count ties by fixed ids; the `tokenizers` trainer broke them in hash-map order, so a
    rebuilt vocabulary could swap two tokens' ids (it did: "stripe" and "stripd") from one run to the next."""
    from t2v_unlearn.tinyworld.render import LANGUAGE_V2
    from t2v_unlearn.tinyworld.train import caption_corpus

    build_tokenizer(tmp_path, caption_corpus(LANGUAGE_V2))
    shipped = tinyworld_path("image") / "tokenizer"
    for name in ("vocab.json", "merges.txt"):
        assert (tmp_path / name).read_text() == (shipped / name).read_text(), name


def test_count_ties_break_the_same_way_in_every_run():
    from t2v_unlearn.tinyworld.tokenizer import learn_merges

    # every pair occurs once: the order is all ties, and the end-of-word symbols' ids decide it
    corpus = ["ab", "cd", "ef", "gh", "ij", "kl", "mn", "op", "qr", "st"]
    merges = learn_merges(corpus)
    assert merges == learn_merges(list(reversed(corpus)))
    assert merges == sorted(merges) and len(merges) == len(corpus)


def test_building_over_an_earlier_tokenizer_writes_the_new_vocabulary(tmp_path):
    build_tokenizer(tmp_path, ["zorbo qwertyuiop"] * 10)
    tokenizer = build_tokenizer(tmp_path)  # the world's words only: "qwertyuiop" is no longer a token
    assert "qwertyuiop</w>" not in tokenizer.get_vocab()
    fast = json.loads((tmp_path / "tokenizer.json").read_text())["model"]["vocab"]
    assert fast == json.loads((tmp_path / "vocab.json").read_text())
