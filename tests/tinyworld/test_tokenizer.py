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
