"""Tokenizers: the paper's bert-base-uncased vocabulary and small trained vocabularies."""

from __future__ import annotations

from tinylm.data import load_articles
from tinylm.tokenizer import load_tokenizer, train_wordpiece


def test_bert_base_uncased_vocabulary_from_the_data_folder(data_root) -> None:
    tok = load_tokenizer("bert-base-uncased", data_root)
    assert len(tok) == 30522
    # Known ids of bert-base-uncased: [CLS]=101, "hello"=7592, "world"=2088, [SEP]=102; text is lower-cased.
    assert tok("Hello World")["input_ids"] == [101, 7592, 2088, 102]
    assert tok.mask_token_id == 103 and tok.pad_token_id == 0


def test_trained_vocabulary_is_reused_and_round_trips(data_root, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TINYLM_CACHE", str(tmp_path))
    texts = [a.text for a in load_articles(200, seed=0, root=data_root)]
    a = train_wordpiece(texts, vocab_size=1000)
    b = train_wordpiece(texts, vocab_size=1000)
    assert a.get_vocab() == b.get_vocab()  # the second call reads the cached vocabulary
    assert 500 < len(a) <= 1000 and a.convert_ids_to_tokens(list(range(5))) == [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    ids = a(max(texts, key=len), truncation=True, max_length=128)["input_ids"]  # an opening longer than 128
    assert len(ids) == 128 and ids[0] == a.cls_token_id and ids[-1] == a.sep_token_id
    assert a.unk_token_id not in ids[:20]  # a vocabulary trained on these texts covers them
    a.save_pretrained(str(tmp_path / "saved"))
    assert load_tokenizer(tmp_path / "saved").get_vocab() == a.get_vocab()
