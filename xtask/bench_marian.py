#!/usr/bin/env python3
"""`tf translate` of an imported MarianMT model beside `transformers`' `generate`, on the same
CPU threads and sentences, greedy and beam 5, one sentence at a time:

    python3 xtask/bench_marian.py --tf target/release/tf --data data/multi30k [--sentences 100]

The model is opus-mt's size and layout (6 + 6 layers, d_model 512, 8 heads, d_ff 2048, SiLU,
58,101 shared ids, sinusoids in Marian's layout) with random weights, seeded; its tokenizer is
the test fixture's SentencePiece models (tests/fixtures/marian/tokenizer) with `vocab.json`
padded to 58,101 ids. A random model seldom ends a sentence, so both sides decode each sentence
to the same length: `tf translate`'s limit, 1.5 × the source's tokens + 10, given to `generate`
as `max_new_tokens` (no forced EOS). Greedy outputs are checked to be identical. Prints one JSON
object; the times exclude loading the model (`tf translate`'s is measured on an empty input and
subtracted).
"""

import argparse
import gzip
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from transformers import MarianConfig, MarianMTModel, MarianTokenizer

REPO = Path(__file__).resolve().parent.parent
VOCAB = 58_101


def opus_mt_sized(directory):
    """A random opus-mt-sized model and a tokenizer over its ids, saved in `directory`."""
    fixture = REPO / "tests/fixtures/marian/tokenizer"
    pieces = json.loads((fixture / "vocab.json").read_text(encoding="utf-8"))
    del pieces["<pad>"]
    for i in range(len(pieces), VOCAB - 1):
        pieces[f"<extra_{i}>"] = i
    pieces["<pad>"] = VOCAB - 1
    (directory / "vocab.json").write_text(json.dumps(pieces, ensure_ascii=False), encoding="utf-8")
    tokenizer = MarianTokenizer(
        str(fixture / "source.spm"), str(fixture / "target.spm"), str(directory / "vocab.json"),
        source_lang="de", target_lang="en",
    )
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = MarianConfig(
        vocab_size=VOCAB, d_model=512, encoder_layers=6, decoder_layers=6,
        encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048,
        decoder_ffn_dim=2048, activation_function="swish", scale_embedding=True,
        max_position_embeddings=512, pad_token_id=VOCAB - 1, decoder_start_token_id=VOCAB - 1,
        eos_token_id=0, forced_eos_token_id=None, init_std=0.02,
    )
    model = MarianMTModel(config).eval()
    model.save_pretrained(directory)
    return model, tokenizer


def time_generate(model, tokenizer, sentences, beams):
    outputs = []
    start = time.perf_counter()
    for sentence in sentences:
        ids = tokenizer(sentence, return_tensors="pt")
        limit = int(1.5 * ids["input_ids"].shape[1]) + 10
        with torch.no_grad():
            out = model.generate(
                **ids, num_beams=beams, do_sample=False, max_new_tokens=limit, min_new_tokens=0,
                length_penalty=1.0, early_stopping=False,
            )
        outputs.append(tokenizer.decode(out[0], skip_special_tokens=True))
    return time.perf_counter() - start, outputs


def time_tf(tf, model_dir, sentences, beams, threads):
    def run(lines):
        start = time.perf_counter()
        done = subprocess.run(
            [tf, "translate", "--model", str(model_dir), "--beam", str(beams), "--batch-size", "1"],
            input="".join(f"{s}\n" for s in lines), capture_output=True, text=True, check=True,
            env={**os.environ, "RAYON_NUM_THREADS": str(threads)},
        )
        return time.perf_counter() - start, done.stdout.splitlines()

    loading, _ = run([])
    total, outputs = run(sentences)
    return total - loading, outputs, loading


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tf", required=True)
    parser.add_argument("--data", default="data/multi30k")
    parser.add_argument("--sentences", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with gzip.open(Path(args.data) / "test_2016_flickr.de.gz", "rt", encoding="utf-8") as f:
        sentences = [line.rstrip("\n") for line in f][: args.sentences]
    with tempfile.TemporaryDirectory() as tmp:
        snapshot, model_dir = Path(tmp) / "snapshot", Path(tmp) / "model"
        snapshot.mkdir()
        model, tokenizer = opus_mt_sized(snapshot)
        subprocess.run(
            [args.tf, "import-marian", "--from", str(snapshot), "--out", str(model_dir)],
            check=True, capture_output=True,
        )
        result = {"sentences": len(sentences), "threads": args.threads, "cases": []}
        for beams in (1, 5):
            hf_seconds, hf_out = time_generate(model, tokenizer, sentences, beams)
            tf_seconds, tf_out, loading = time_tf(
                args.tf, model_dir, sentences, beams, args.threads
            )
            case = {
                "beam": beams,
                "transformers_s": round(hf_seconds, 2),
                "tf_s": round(tf_seconds, 2),
                "tf_loading_s": round(loading, 2),
                "speedup": round(hf_seconds / tf_seconds, 2),
            }
            if beams == 1:
                case["identical_outputs"] = sum(a == b for a, b in zip(hf_out, tf_out))
            result["cases"].append(case)
            print(json.dumps(case), flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
