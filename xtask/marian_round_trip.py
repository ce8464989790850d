#!/usr/bin/env python3
"""Translate with a model that `tf export-marian` wrote, through `transformers` alone.

    python3 xtask/marian_round_trip.py EXPORT_DIR INPUT OUTPUT

Loads EXPORT_DIR with `MarianMTModel.from_pretrained` and `AutoTokenizer.from_pretrained`, then
decodes each line of INPUT greedily with `model.generate` under the output limit `tf translate`
applies (at most floor(1.5 n) + 10 tokens for a source of n tokens, within the model's
positions), and writes one translation a line to OUTPUT (an empty line stays empty). The
round-trip test compares OUTPUT with `tf translate --beam 1` of the same model.

Needs torch and transformers (pip install torch transformers); reads nothing from the network.
"""

import argparse
import math

import torch
from transformers import AutoTokenizer, MarianMTModel


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir")
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--per-source-token", type=float, default=1.5)
    parser.add_argument("--extra", type=int, default=10)
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.export_dir)
    model = MarianMTModel.from_pretrained(args.export_dir).eval()
    positions = model.config.max_position_embeddings
    with open(args.input, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()

    out = []
    with torch.inference_mode():
        for line in lines:
            ids = tokenizer(line)["input_ids"][:positions]
            if not ids:
                out.append("")
                continue
            limit = math.floor(args.per_source_token * len(ids)) + args.extra
            limit = max(1, min(limit, positions))
            generated = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=limit,
                num_beams=1,
                do_sample=False,
            )
            out.append(tokenizer.decode(generated[0], skip_special_tokens=True))
    with open(args.output, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in out))


if __name__ == "__main__":
    main()
