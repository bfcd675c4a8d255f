import shutil

import pytest

from unimedvl.errors import ConfigError
from unimedvl.tokenizer import Tokenizer, offline_qwen_dir


def test_offline_qwen_ids():
    tok = Tokenizer.offline_qwen()
    s = tok.special
    assert (s.pad, s.bos, s.eos, s.vision_start, s.vision_end) == (151643, 151644, 151645, 151652, 151653)
    assert tok.num_added_specials == 0
    ids = tok.encode("The chest X-ray shows a nodule.")
    assert tok.decode(ids) == "The chest X-ray shows a nodule."
    assert tok.encode("<|im_start|>") == [151644]


def test_vocab_merges_dir_adds_missing_specials(tmp_path):
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(offline_qwen_dir() / name, tmp_path / name)
    tok = Tokenizer.from_dir(tmp_path)
    ref = Tokenizer.offline_qwen()
    assert tok.num_added_specials == 5
    assert tok.encode("Axial CT, 5 mm slices") == ref.encode("Axial CT, 5 mm slices")
    assert len({tok.special.bos, tok.special.eos, tok.special.vision_start, tok.special.vision_end}) == 4


def test_small_bpe_round_trip(tmp_path):
    texts = ["The MRI shows a lesion in the left frontal lobe.", "No lesion. Normal chest x-ray."] * 20
    tok = Tokenizer.train_bpe(texts, vocab_size=400)
    assert (tok.special.pad, tok.special.bos, tok.special.eos) == (0, 1, 2)
    assert len(tok) <= 400
    text = "The MRI shows two lesions; 3 mm."
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|vision_start|>x<|vision_end|>")[0] == tok.special.vision_start
    tok.save(tmp_path / "tok")
    again = Tokenizer.from_dir(tmp_path / "tok")
    assert again.encode(text) == tok.encode(text) and again.special == tok.special
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (tmp_path / "tok" / name).is_file()


def test_directory_without_tokenizer_files(tmp_path):
    with pytest.raises(ConfigError, match="no tokenizer files"):
        Tokenizer.from_dir(tmp_path)
