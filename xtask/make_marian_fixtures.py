#!/usr/bin/env python3
"""Writes the MarianMT parity fixtures that `cargo test --release --workspace --test marian_parity`
checks: tiny random `transformers` MarianMT models, saved as `save_pretrained` saves them, with
inputs and what `transformers` computes from them.

Run by hand (needs `pip install torch transformers safetensors sentencepiece`; nothing is
downloaded; the tokenizer is trained on Multi30k as `tf data multi30k` fetches it):

    python3 xtask/make_marian_fixtures.py [OUT_DIR [MULTI30K_DIR]]
    # defaults: tests/fixtures/marian, data/multi30k

Each model case is a directory NAME/ holding
- `config.json`, `generation_config.json`, `model.safetensors`: `MarianMTModel.save_pretrained`;
- `reference.safetensors`: `input.src` (int64 `[batch, src_len]`, padded with the pad id),
  `input.src_mask` (uint8, 1 = padding), `input.tgt` (int64 `[batch, tgt_len]`, starting with the
  decoder start token), `encoder_output` (`[batch, src_len, d_model]`) and `logits`
  (`[batch, tgt_len, tgt_vocab]`);
- `generate.json`: the token ids `model.generate` returns for `input.src`, greedy and beam 5,
  with the arguments it was given.

The translator case, `translator/`, is a MarianMT model over the tokenizer case's vocabulary,
trained briefly on Multi30k, with `generate`'s greedy and beam-5 translations of validation
sentences (`translations.json`).

Every parameter, the LayerNorms and `final_logits_bias` included, is drawn at random with a
spread that makes a mix-up (sine for cosine half, query for key, weight for bias) visible far
above the tolerance.

The tokenizer case, `tokenizer/`, is what `MarianTokenizer.save_pretrained` writes for two
SentencePiece unigram models trained on Multi30k's first training sentences (the German one
with opus-mt's `nmt_nfkc` normalisation, the English one with none, so that both paths are
covered; small vocabularies, so that unknown characters are common), and `reference.json.gz`:
sentences (Multi30k's validation split and hand-written ones with unknown characters, runs of
spaces, language codes) with the ids `MarianTokenizer` gives them as sources and as targets, and
the text it decodes each target's ids back to.
"""

import gzip
import json
import sys
import tempfile
from pathlib import Path

import sentencepiece
import torch
from safetensors.torch import save_file
from transformers import MarianConfig, MarianMTModel, MarianTokenizer

CASES = {
    # The opus-mt shape in miniature: one vocabulary, every embedding and the output tied, SiLU.
    "shared_swish_2x2": dict(
        vocab_size=40, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24,
        activation_function="swish", scale_embedding=True, share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True, max_position_embeddings=32,
    ),
    # Separate source and target vocabularies, the target embedding tied to the output; ReLU,
    # no embedding scale.
    "separate_vocab_relu_1x2": dict(
        vocab_size=40, decoder_vocab_size=30, d_model=24, encoder_layers=1, decoder_layers=2,
        encoder_attention_heads=3, decoder_attention_heads=3, encoder_ffn_dim=20,
        decoder_ffn_dim=20, activation_function="relu", scale_embedding=False,
        share_encoder_decoder_embeddings=False, tie_word_embeddings=True,
        max_position_embeddings=24,
    ),
    # `normalize_before` set: transformers' Marian layers ignore it and stay post-norm.
    "shared_gelu_3x1_normalize_before": dict(
        vocab_size=40, d_model=16, encoder_layers=3, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=24, decoder_ffn_dim=24,
        activation_function="gelu", scale_embedding=True, share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True, normalize_before=True, max_position_embeddings=32,
    ),
    # Nothing tied: separate embeddings and an output projection of its own.
    "untied_swish_1x1": dict(
        vocab_size=36, decoder_vocab_size=28, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=32,
        decoder_ffn_dim=32, activation_function="swish", scale_embedding=True,
        share_encoder_decoder_embeddings=False, tie_word_embeddings=False,
        max_position_embeddings=20,
    ),
}

SRC_LENGTHS = [7, 4, 5]
TGT_LEN = 6
MAX_LENGTH = 12


def randomise(model):
    """Every parameter and buffer but the positional tables at random, norms around 1."""
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if "embed_positions" in name:
                continue
            if "layer_norm" in name and name.endswith("weight"):
                tensor.copy_(1.0 + 0.3 * torch.randn_like(tensor))
            else:
                tensor.copy_(0.3 * torch.randn_like(tensor))


def train_to_reverse(model, pad, steps=300):
    """A few hundred Adam steps on reversing token sequences, so that greedy decoding and beam
    search have choices to make (a random model repeats one token whatever its source)."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        lengths = torch.randint(2, 7, (32,))
        src = torch.full((32, 7), pad, dtype=torch.long)
        labels = torch.full((32, 7), -100, dtype=torch.long)
        for row, length in enumerate(lengths.tolist()):
            tokens = torch.randint(1, pad, (length,))
            src[row, :length] = tokens
            src[row, length] = 0
            labels[row, :length] = tokens.flip(0)
            labels[row, length] = 0
        loss = model(input_ids=src, attention_mask=(src != pad).long(), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return loss.item()


def case(name, settings, out_dir, seed):
    torch.manual_seed(seed)
    vocab = settings["vocab_size"]
    tgt_vocab = settings.get("decoder_vocab_size") or vocab
    # The pad id (also the decoder start) is a token of both vocabularies.
    pad = min(vocab, tgt_vocab) - 1
    config = MarianConfig(
        pad_token_id=pad, decoder_start_token_id=pad, eos_token_id=0, forced_eos_token_id=0,
        dropout=0.1, attention_dropout=0.0, activation_dropout=0.0, **settings,
    )
    model = MarianMTModel(config).eval()
    randomise(model)
    model.tie_weights()
    loss = train_to_reverse(model, pad)
    directory = out_dir / name
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)

    batch, src_len = len(SRC_LENGTHS), max(SRC_LENGTHS)
    # Real tokens are 1 .. pad - 1, each source ends in EOS (0) and is padded with `pad`.
    src = torch.full((batch, src_len), pad, dtype=torch.long)
    for row, length in enumerate(SRC_LENGTHS):
        src[row, : length - 1] = torch.randint(1, pad, (length - 1,))
        src[row, length - 1] = 0
    src_mask = (src == pad).to(torch.uint8)
    attention_mask = 1 - src_mask.long()
    tgt = torch.randint(1, pad, (batch, TGT_LEN))
    tgt[:, 0] = pad
    with torch.no_grad():
        encoder_output = model.model.encoder(input_ids=src, attention_mask=attention_mask)[0]
        logits = model(input_ids=src, attention_mask=attention_mask, decoder_input_ids=tgt).logits
    save_file(
        {
            "input.src": src,
            "input.src_mask": src_mask,
            "input.tgt": tgt,
            "encoder_output": encoder_output.contiguous(),
            "logits": logits.contiguous(),
        },
        directory / "reference.safetensors",
    )

    generated = {"max_length": MAX_LENGTH, "length_penalty": 1.0, "early_stopping": False}
    for key, beams in [("greedy", 1), ("beam5", 5)]:
        with torch.no_grad():
            out = model.generate(
                input_ids=src, attention_mask=attention_mask, num_beams=beams, do_sample=False,
                max_length=MAX_LENGTH, length_penalty=1.0, early_stopping=False,
            )
        generated[key] = out.tolist()
    (directory / "generate.json").write_text(json.dumps(generated, indent=1) + "\n")
    print(f"{name}: d_model {settings['d_model']}, logits {list(logits.shape)}, loss {loss:.2f}")


# Sentences beside Multi30k's: characters the models never saw (alone and in runs), spaces to
# collapse, full-width letters NFKC folds, language codes, an empty line.
EXTRA_SENTENCES = [
    "Ein Mann mit ǂǂ☃ Zeichen läuft ☃x.",
    "  Zwei   Hunde  spielen im Schnee.  ",
    "Ｆｕｌｌ width Ｌｅｔｔｅｒｓ und Ziffern ２０２６.",
    "Äpfel, Öl, Übung, Straße, ẞ, é, ç, ñ, ø, æ.",
    ">>fr<< Eine Frau sitzt auf einer Bank.",
    ">>de<<A girl plays.",
    ">>xx<< an unknown language code",
    "Emoji 🙂🙂 and CJK 漢字 and Cyrillic Привет.",
    "",
    "Tabs\tand\u00a0no-break\u2009thin spaces.",
    "Special tokens </s> written <unk> in the<pad>text.",
    "</s>",
    "A code >>fr<< in the middle, and one after </s>>>de<< a special token.",
    ">>de<<",
    "Das Mädchen ist fünf Jahre alt.",
]


def read_lines(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def train_spm(lines, prefix, vocab_size, normalization):
    text = Path(prefix + ".txt")
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(
        input=str(text), model_prefix=prefix, vocab_size=vocab_size, model_type="unigram",
        normalization_rule_name=normalization, character_coverage=0.995, minloglevel=2,
        num_threads=1,
    )
    return sentencepiece.SentencePieceProcessor(model_file=prefix + ".model")


def tokenizer_case(out_dir, corpus):
    de_train = read_lines(corpus / "train.de.gz")[:3000]
    en_train = read_lines(corpus / "train.en.gz")[:3000]
    with tempfile.TemporaryDirectory() as tmp:
        source = train_spm(de_train, f"{tmp}/source", 400, "nmt_nfkc")
        target = train_spm(en_train, f"{tmp}/target", 300, "identity")
        # opus-mt's layout: EOS 0, UNK 1, language codes, every piece of both models once, pad
        # last.
        vocab = {"</s>": 0, "<unk>": 1, ">>de<<": 2, ">>fr<<": 3}
        for model in (source, target):
            for i in range(model.get_piece_size()):
                piece = model.id_to_piece(i)
                if piece not in ("<unk>", "<s>", "</s>") and piece not in vocab:
                    vocab[piece] = len(vocab)
        vocab["<pad>"] = len(vocab)
        Path(f"{tmp}/vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        tokenizer = MarianTokenizer(f"{tmp}/source.model", f"{tmp}/target.model", f"{tmp}/vocab.json")
        directory = out_dir / "tokenizer"
        directory.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(directory)

    sentences = read_lines(corpus / "val.de.gz")[:500] + read_lines(corpus / "val.en.gz")[:500]
    sentences += EXTRA_SENTENCES
    rows = []
    for sentence in sentences:
        source_ids = tokenizer(sentence)["input_ids"]
        target_ids = tokenizer(text_target=sentence)["input_ids"]
        rows.append({
            "text": sentence,
            "source_ids": source_ids,
            "target_ids": target_ids,
            "decoded": tokenizer.decode(target_ids, skip_special_tokens=True),
        })
    reference = {"pad_id": tokenizer.pad_token_id, "eos_id": tokenizer.eos_token_id,
                 "unk_id": tokenizer.unk_token_id, "sentences": rows}
    with gzip.open(directory / "reference.json.gz", "wt", encoding="utf-8") as f:
        json.dump(reference, f, ensure_ascii=False)
    unknown = sum(row["source_ids"].count(tokenizer.unk_token_id) for row in rows)
    print(f"tokenizer: {len(vocab)} ids, {len(rows)} sentences, {unknown} unknown source ids")


def translator_case(out_dir, corpus):
    """A MarianMT model over the tokenizer case's vocabulary, trained for a few hundred steps on
    Multi30k, and the greedy translations `generate` gives of validation sentences: what
    `tf import-marian` followed by `tf translate --beam 1` must reproduce. Only the model files
    are written (`translator/`); the test puts the tokenizer's beside them."""
    torch.manual_seed(7)
    tokenizer = MarianTokenizer.from_pretrained(out_dir / "tokenizer")
    vocab = len(tokenizer.get_vocab())
    config = MarianConfig(
        vocab_size=vocab, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, activation_function="swish", scale_embedding=True,
        max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id, dropout=0.0,
    )
    model = MarianMTModel(config)
    de = read_lines(corpus / "train.de.gz")[:2000]
    en = read_lines(corpus / "train.en.gz")[:2000]
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for step in range(400):
        rows = [(step * 16 + i) % len(de) for i in range(16)]
        batch = tokenizer([de[i] for i in rows], text_target=[en[i] for i in rows],
                          padding=True, truncation=True, max_length=40, return_tensors="pt")
        batch["labels"][batch["labels"] == tokenizer.pad_token_id] = -100
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    directory = out_dir / "translator"
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)

    sentences = [s for s in read_lines(corpus / "val.de.gz") if len(s.split()) <= 10][:130]
    kept = []
    for sentence in sentences:
        ids = tokenizer(sentence, return_tensors="pt")
        # `tf translate` stops at 1.5 × the source's tokens + 10: sentences whose translation
        # ends with EOS within that are kept.
        limit = int(1.5 * ids["input_ids"].shape[1]) + 10
        with torch.no_grad():
            out = model.generate(**ids, num_beams=1, do_sample=False, max_new_tokens=limit + 1)
        tokens = out[0].tolist()[1:]
        if tokenizer.eos_token_id in tokens and tokens.index(tokenizer.eos_token_id) < limit:
            # Beam 5 with generate's defaults (length_penalty 1, early_stopping False), EOS
            # forced as the limit's last token, as `tf translate --beam 5` decodes a Marian model.
            with torch.no_grad():
                beam = model.generate(**ids, num_beams=5, do_sample=False, max_new_tokens=limit)
            kept.append({"source": sentence,
                         "greedy": tokenizer.decode(out[0], skip_special_tokens=True),
                         "beam5": tokenizer.decode(beam[0], skip_special_tokens=True)})
    (directory / "translations.json").write_text(
        json.dumps(kept, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"translator: loss {loss.item():.2f}, {len(kept)} of {len(sentences)} translations kept")


def main():
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("tests/fixtures/marian")
    corpus = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("data/multi30k")
    for seed, (name, settings) in enumerate(CASES.items()):
        case(name, settings, out_dir, seed)
    tokenizer_case(out_dir, corpus)
    translator_case(out_dir, corpus)


if __name__ == "__main__":
    main()
