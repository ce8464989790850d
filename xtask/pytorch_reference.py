#!/usr/bin/env python3
"""The PyTorch reference for Multi30k translation: the recipe of `tf train --task translation`
(docs/translation.md, "Training defaults") written with torch.nn.Transformer, under the same
wall-clock budget, so that the two can be compared on one machine.

    pip install torch tokenizers sacrebleu
    python3 xtask/pytorch_reference.py --data data/multi30k --out runs/torch-de-en

The same as ours: a joint 8,000-token BPE vocabulary learned by Hugging Face `tokenizers` with
the same settings (NFC, Metaspace, Latin-1 base alphabet, min frequency 2); d_model 256, 4 heads,
3 + 3 post-norm layers, d_ff 1024, ReLU, sinusoidal positions added to embeddings scaled by
sqrt(d_model), one embedding matrix for source, target and output; dropout 0.3 on sublayer
outputs and embedding sums (--dropout); label smoothing 0.1 with padding ignored; Adam (0.9, 0.98, 1e-9),
peak learning rate 1e-3 after 800 linear warm-up steps, then proportional to step^-0.5;
gradient norm clipped at 1.0; batches of at most 2,048 padded tokens a side, sorted by length
with ties shuffled, batch order shuffled each epoch; 60 epochs or 85 minutes; greedy BLEU on the
first 500 `val` sentences after each epoch picks the best checkpoint, and the mean of the last 5
checkpoints replaces it if it scores at least as well; beam 5 with the GNMT length penalty chosen
on all of `val` among 0.6, 1, 1.5, 2, 3 (--alphas) and at most 1.5 * source + 10 tokens on
test_2016_flickr.

nn.Transformer's own extras are turned off to match: it drops attention weights and the
feed-forward's hidden activations at its dropout rate (here --inner-dropout, default 0, as ours and
the paper: dropout on sublayer outputs only), and it ends each stack with a LayerNorm (removed: a
post-norm stack ends normalized). Where it still differs: nn.Transformer starts its feed-forward
weights Xavier-uniform (ours: Kaiming-uniform, nn.Linear's default; both Xavier in attention),
PyTorch's label smoothing spreads epsilon over every class including padding, and its beam search
decodes one sentence at a time without a cache (the same search, slower). Prints one line per 50
steps and per epoch, writes metrics.csv, summary.json and the test translations into --out.
"""

import argparse
import copy
import csv
import gzip
import json
import math
import os
import random
import statistics
import time
import warnings

import sacrebleu
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from torch import nn

from bench_pytorch import sinusoidal_positions  # beside this script

PAD, BOS, EOS, UNK = 0, 1, 2, 3
# nn.Transformer's encoder takes its nested-tensor fast path at inference and says so.
warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors")
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def read_lines(data, split, lang):
    for name in (f"{split}.{lang}", f"{split}.{lang}.gz"):
        path = os.path.join(data, name)
        if os.path.exists(path):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as f:
                return f.read().splitlines()
    raise SystemExit(f"error: no {split}.{lang} or {split}.{lang}.gz in {data} (tf data multi30k gets it)")


def learn_vocabulary(sentences, size, min_frequency):
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    alphabet = [chr(c) for c in range(ord(" "), ord("~") + 1)] + [chr(c) for c in range(0xA1, 0x100)]
    trainer = trainers.BpeTrainer(
        vocab_size=size,
        min_frequency=min_frequency,
        initial_alphabet=alphabet,
        show_progress=False,
        special_tokens=SPECIALS,
    )
    tokenizer.train_from_iterator(sentences, trainer)
    assert [tokenizer.token_to_id(t) for t in SPECIALS] == [PAD, BOS, EOS, UNK]
    return tokenizer


def token_batches(src_lens, tgt_lens, max_tokens, rng):
    order = list(range(len(src_lens)))
    rng.shuffle(order)
    order.sort(key=lambda i: (tgt_lens[i], src_lens[i]))
    batches, batch, longest_src, longest_tgt = [], [], 0, 0
    for i in order:
        s, t = max(longest_src, src_lens[i]), max(longest_tgt, tgt_lens[i])
        n = len(batch) + 1
        if batch and (n * s > max_tokens or n * t > max_tokens):
            batches.append(batch)
            batch, longest_src, longest_tgt = [], src_lens[i], tgt_lens[i]
        else:
            longest_src, longest_tgt = s, t
        batch.append(i)
    if batch:
        batches.append(batch)
    rng.shuffle(batches)
    return batches


def pad(rows):
    width = max(len(r) for r in rows)
    return torch.tensor([r + [PAD] * (width - len(r)) for r in rows], dtype=torch.long)


class Translator(nn.Module):
    def __init__(self, vocab, d_model, heads, layers, d_ff, dropout, inner_dropout, max_len=512):
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab, d_model, padding_idx=PAD)
        nn.init.normal_(self.embedding.weight, std=d_model**-0.5)
        self.register_buffer("pe", sinusoidal_positions(max_len, d_model))
        self.dropout = nn.Dropout(dropout)
        self.transformer = nn.Transformer(
            d_model, heads, layers, layers, d_ff, dropout, batch_first=True
        )
        # nn.Transformer drops attention weights and FFN hidden activations at `dropout` too;
        # the paper (and ours) drops sublayer outputs only.
        for layer in [*self.transformer.encoder.layers, *self.transformer.decoder.layers]:
            layer.self_attn.dropout = inner_dropout
            if hasattr(layer, "multihead_attn"):
                layer.multihead_attn.dropout = inner_dropout
            layer.dropout.p = inner_dropout
        # ...and ends each stack with one more LayerNorm, which a post-norm stack does not have.
        self.transformer.encoder.norm = None
        self.transformer.decoder.norm = None

    def embed(self, tokens):
        x = self.embedding(tokens) * math.sqrt(self.d_model) + self.pe[: tokens.size(1)]
        return self.dropout(x)

    def encode(self, src):
        return self.transformer.encoder(self.embed(src), src_key_padding_mask=src == PAD)

    def decode(self, tgt_in, memory, src):
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.size(1), dtype=torch.bool)
        h = self.transformer.decoder(
            self.embed(tgt_in),
            memory,
            tgt_mask=causal,
            tgt_key_padding_mask=tgt_in == PAD,
            memory_key_padding_mask=src == PAD,
            tgt_is_causal=True,
        )
        return h @ self.embedding.weight.t()

    def forward(self, src, tgt_in):
        return self.decode(tgt_in, self.encode(src), src)


@torch.no_grad()
def greedy(model, src_rows):
    src = pad(src_rows)
    memory = model.encode(src)
    limit = int(1.5 * src.size(1)) + 10
    out = torch.full((src.size(0), 1), BOS, dtype=torch.long)
    done = torch.zeros(src.size(0), dtype=torch.bool)
    for _ in range(limit):
        next_token = model.decode(out, memory, src)[:, -1].argmax(-1)
        next_token = torch.where(done, torch.full_like(next_token, PAD), next_token)
        out = torch.cat([out, next_token.unsqueeze(1)], 1)
        done |= next_token == EOS
        if done.all():
            break
    return [[t for t in row[1:] if t not in (PAD, EOS)] for row in out.tolist()]


@torch.no_grad()
def beam_search(model, src_row, beam, alpha):
    src = pad([src_row])
    memory = model.encode(src)
    limit = int(1.5 * len(src_row)) + 10
    live = [([BOS], 0.0)]
    finished = []
    penalty = lambda n: ((5 + n) / 6) ** alpha
    for _ in range(limit):
        tgt = pad([tokens for tokens, _ in live])
        logp = F.log_softmax(model.decode(tgt, memory.expand(len(live), -1, -1), src.expand(len(live), -1))[:, -1], -1)
        candidates = []
        for (tokens, score), row in zip(live, logp):
            values, ids = row.topk(beam)
            candidates += [(tokens + [i], score + v) for v, i in zip(values.tolist(), ids.tolist())]
        candidates.sort(key=lambda c: -c[1])
        live = []
        for tokens, score in candidates[:beam]:
            if tokens[-1] == EOS:
                finished.append((tokens, score / penalty(len(tokens) - 1)))
            else:
                live.append((tokens, score))
        best_finished = max((s for _, s in finished), default=-math.inf)
        if not live or (len(finished) >= beam and best_finished >= max(s / penalty(limit) for _, s in live)):
            break
    finished += [(tokens, score / penalty(len(tokens) - 1)) for tokens, score in live]
    tokens = max(finished, key=lambda c: c[1])[0]
    return [t for t in tokens[1:] if t not in (PAD, EOS)]


def translate(model, tokenizer, sentences, beam, alpha, batch=64):
    model.eval()
    rows = [tokenizer.encode(s).ids for s in sentences]  # sources without EOS, as ours
    out = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        if beam == 1:
            for i, ids in zip(chunk, greedy(model, [rows[i] for i in chunk])):
                out[i] = ids
        else:
            for i in chunk:
                out[i] = beam_search(model, rows[i], beam, alpha)
    return [tokenizer.decode(ids) for ids in out]


@torch.no_grad()
def validation_loss(model, pairs, batch_tokens, smoothing):
    model.eval()
    total, tokens = 0.0, 0
    for batch in token_batches([len(s) for s, _ in pairs], [len(t) for _, t in pairs], batch_tokens, random.Random(0)):
        src = pad([pairs[i][0] for i in batch])
        tgt = pad([[BOS] + pairs[i][1] for i in batch])
        gold = pad([pairs[i][1] + [EOS] for i in batch])
        logits = model(src, tgt)
        n = int((gold != PAD).sum())
        total += float(F.cross_entropy(logits.flatten(0, 1), gold.flatten(), ignore_index=PAD, label_smoothing=smoothing)) * n
        tokens += n
    return total / tokens


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("TF_MULTI30K", "data/multi30k"))
    p.add_argument("--src", default="de")
    p.add_argument("--tgt", default="en")
    p.add_argument("--out", default="runs/torch-de-en")
    p.add_argument("--max-minutes", type=float, default=85.0)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--inner-dropout", type=float, default=0.0, help="dropout on attention weights and FFN hidden activations (nn.Transformer's default: --dropout)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--batch-tokens", type=int, default=2048)
    p.add_argument("--max-tokens", type=int, default=100)
    p.add_argument("--eval-samples", type=int, default=500)
    p.add_argument("--average-last", type=int, default=5)
    p.add_argument("--alphas", default="0.6,1,1.5,2,3", help="length penalties tried on all of val for the test beam (as tf train)")
    p.add_argument("--train-limit", type=int, default=None, help="use the first N training pairs (smoke tests)")
    p.add_argument("--test-limit", type=int, default=None, help="score the first N test sentences (smoke tests)")
    args = p.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)

    train_src, train_tgt = read_lines(args.data, "train", args.src), read_lines(args.data, "train", args.tgt)
    if args.train_limit:
        train_src, train_tgt = train_src[: args.train_limit], train_tgt[: args.train_limit]
    val_src, val_tgt = read_lines(args.data, "val", args.src), read_lines(args.data, "val", args.tgt)
    test_src, test_tgt = read_lines(args.data, "test_2016_flickr", args.src), read_lines(args.data, "test_2016_flickr", args.tgt)
    if args.test_limit:
        test_src, test_tgt = test_src[: args.test_limit], test_tgt[: args.test_limit]
    tokenizer = learn_vocabulary(train_src + train_tgt, args.vocab_size, 2)
    tokenizer.save(os.path.join(args.out, "tokenizer.json"))

    def encode(src, tgt):
        pairs = [(tokenizer.encode(s).ids, tokenizer.encode(t).ids) for s, t in zip(src, tgt)]
        return [(s, t) for s, t in pairs if 0 < len(s) < args.max_tokens and 0 < len(t) < args.max_tokens]

    train, val = encode(train_src, train_tgt), encode(val_src, val_tgt)
    model = Translator(tokenizer.get_vocab_size(), 256, 4, 3, 1024, args.dropout, args.inner_dropout)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    peak, warmup = 1e-3, 800
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: peak * min((s + 1) / warmup, math.sqrt(warmup / (s + 1))))
    print(f"torch {torch.__version__}, {args.threads} threads; {len(train)} training pairs; {params / 1e6:.1f}M parameters")

    metrics = open(os.path.join(args.out, "metrics.csv"), "w", newline="")
    log = csv.writer(metrics)
    log.writerow(["step", "split", "loss", "lr", "target_tokens_per_sec", "elapsed_secs", "epoch", "bleu"])
    started = time.perf_counter()
    step, window_tokens, window_start, rates = 0, 0, started, []
    checkpoints, best = [], None
    out_of_time = False

    def validate(epoch, model_state=None):
        loss = validation_loss(model, val, args.batch_tokens, 0.1)
        hyps = translate(model, tokenizer, val_src[: args.eval_samples], 1, 0.6)
        bleu = sacrebleu.corpus_bleu(hyps, [val_tgt[: args.eval_samples]]).score
        log.writerow([step, "valid", f"{loss:.6f}", "", "", f"{time.perf_counter() - started:.1f}", epoch, f"{bleu:.2f}"])
        metrics.flush()
        print(f"epoch {epoch} step {step}: valid loss {loss:.3f}, BLEU {bleu:.2f} ({time.perf_counter() - started:.0f} s)")
        return bleu

    for epoch in range(1, args.epochs + 1):
        model.train()
        for batch in token_batches([len(s) for s, _ in train], [len(t) for _, t in train], args.batch_tokens, rng):
            src = pad([train[i][0] for i in batch])
            tgt = pad([[BOS] + train[i][1] for i in batch])
            gold = pad([train[i][1] + [EOS] for i in batch])
            logits = model(src, tgt)
            loss = F.cross_entropy(logits.flatten(0, 1), gold.flatten(), ignore_index=PAD, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            window_tokens += int((gold != PAD).sum())
            if step % 50 == 0:
                now = time.perf_counter()
                rate = window_tokens / (now - window_start)
                rates.append(rate)
                window_tokens, window_start = 0, now
                log.writerow([step, "train", f"{loss.item():.6f}", f"{schedule.get_last_lr()[0]:.6e}", f"{rate:.0f}", f"{now - started:.1f}", epoch - 1, ""])
                print(f"step {step}: loss {loss.item():.3f}, {rate:.0f} target tokens/s")
            if time.perf_counter() - started > args.max_minutes * 60:
                out_of_time = True
                break
        bleu = validate(epoch)
        checkpoints = (checkpoints + [copy.deepcopy(model.state_dict())])[-args.average_last :]
        if best is None or bleu > best[0]:
            best = (bleu, copy.deepcopy(model.state_dict()), f"epoch {epoch}")
        if out_of_time:
            break

    wall = time.perf_counter() - started
    if len(checkpoints) > 1:
        mean = {k: sum(c[k].float() for c in checkpoints) / len(checkpoints) for k in checkpoints[0]}
        model.load_state_dict(mean)
        bleu = validate("average")
        if bleu >= best[0]:
            best = (bleu, mean, f"mean of the last {len(checkpoints)}")
    model.load_state_dict(best[1])
    torch.save(best[1], os.path.join(args.out, "model.pt"))
    summary = {"torch": torch.__version__, "threads": args.threads, "steps": step, "train_secs": wall, "kept": best[2], "valid_bleu": best[0], "median_target_tokens_per_sec": statistics.median(rates) if rates else None}
    # The length penalty of the test beam, chosen on all of val with beam 5 (the first of equals),
    # as `tf train` chooses it at the end of a translation run.
    t0 = time.perf_counter()
    tried = []
    for alpha in [float(a) for a in args.alphas.split(",")]:
        hyps = translate(model, tokenizer, val_src, 5, alpha)
        tried.append({"alpha": alpha, "bleu": sacrebleu.corpus_bleu(hyps, [val_tgt]).score})
        print(f"val beam 5, alpha {alpha}: BLEU {tried[-1]['bleu']:.2f}")
    chosen = max(tried, key=lambda t: t["bleu"])["alpha"]
    summary.update(alpha=chosen, alphas_tried=tried, alpha_secs=time.perf_counter() - t0)
    for name, beam in (("greedy", 1), ("beam5", 5)):
        t0 = time.perf_counter()
        hyps = translate(model, tokenizer, test_src, beam, chosen)
        summary[f"test_{name}_secs"] = time.perf_counter() - t0
        summary[f"test_{name}_bleu"] = sacrebleu.corpus_bleu(hyps, [test_tgt]).score
        with open(os.path.join(args.out, f"test.{name}.{args.tgt}"), "w", encoding="utf-8") as f:
            f.write("\n".join(hyps) + "\n")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
