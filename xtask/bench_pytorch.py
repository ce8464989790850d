#!/usr/bin/env python3
"""PyTorch's side of `cargo xtask bench` (cases 1, 3 and 4), with the same shapes and thread
count as ours. Prints one JSON object on stdout. Run by the bench when `import torch` works:

    python3 xtask/bench_pytorch.py --threads 2 --repeats 21
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


def timing(run, warmup, repeats):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {
        "median_ms": statistics.median(times) if len(times) % 2 else times[len(times) // 2],
        "min_ms": times[0],
        "max_ms": times[-1],
        "runs": len(times),
    }


def mha_forward(shape, heads, warmup, repeats):
    batch, seq, d_model = shape
    mha = nn.MultiheadAttention(d_model, heads, batch_first=True).eval()
    x = torch.randn(batch, seq, d_model)

    def run():
        with torch.inference_mode():
            mha(x, x, x, need_weights=False)

    return {"shape": shape, "heads": heads, "timing": timing(run, warmup, repeats)}


def sinusoidal_positions(max_len, d_model):
    """The paper's positional encodings, [max_len, d_model]: sin on even, cos on odd columns."""
    position = torch.arange(max_len).unsqueeze(1)
    rate = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(position * rate)
    pe[:, 1::2] = torch.cos(position * rate)
    return pe


class Seq2Seq(nn.Module):
    """The small model of cases 3 and 4: shared embeddings scaled by sqrt(d), sinusoidal
    positions, nn.Transformer (post-norm), tied output projection."""

    def __init__(self, vocab=1000, d_model=256, heads=4, layers=3, d_ff=1024, max_len=600, dropout=0.1):
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab, d_model)
        self.transformer = nn.Transformer(
            d_model, heads, layers, layers, d_ff, dropout=dropout, batch_first=True
        )
        self.register_buffer("pe", sinusoidal_positions(max_len, d_model))

    def embed(self, tokens, offset=0):
        x = self.embedding(tokens) * math.sqrt(self.d_model)
        return x + self.pe[offset : offset + tokens.shape[1]]

    def forward(self, src, tgt):
        causal = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1])
        out = self.transformer(self.embed(src), self.embed(tgt), tgt_mask=causal)
        return out @ self.embedding.weight.T


def train_step(warmup, repeats, dropout):
    torch.manual_seed(1)
    model = Seq2Seq(dropout=dropout).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)
    src = torch.randint(3, 999, (32, 32))
    tgt = torch.randint(3, 999, (32, 32))
    loss_fn = nn.CrossEntropyLoss(ignore_index=0, label_smoothing=0.1)

    def run():
        optimizer.zero_grad()
        logits = model(src, tgt)
        loss = loss_fn(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
        loss.backward()
        # As tf train: the gradients' global norm clipped to 1.
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    t = timing(run, warmup, repeats)
    return {"timing": t, "tokens_per_sec": 32 * 32 / (t["median_ms"] / 1e3)}


def heads(x, n_heads):
    b, t, d = x.shape
    return x.view(b, t, n_heads, d // n_heads).transpose(1, 2)


def merge(x):
    b, h, t, dk = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dk)


def cached_greedy(model, src, n):
    """Greedy decoding with per-layer key/value caches (nn.Transformer has none), with the same
    math as nn.TransformerDecoderLayer (post-norm, ReLU)."""
    layers = model.transformer.decoder.layers
    h = layers[0].self_attn.num_heads
    d = model.d_model
    memory = model.transformer.encoder(model.embed(src))
    cross_kv = []
    for layer in layers:
        w, b = layer.multihead_attn.in_proj_weight, layer.multihead_attn.in_proj_bias
        k = F.linear(memory, w[d : 2 * d], b[d : 2 * d])
        v = F.linear(memory, w[2 * d :], b[2 * d :])
        cross_kv.append((heads(k, h), heads(v, h)))
    caches = [None] * len(layers)
    token = torch.ones(src.shape[0], 1, dtype=torch.long)
    out = []
    for step in range(n):
        x = model.embed(token, step)
        for i, layer in enumerate(layers):
            sa = layer.self_attn
            q, k, v = F.linear(x, sa.in_proj_weight, sa.in_proj_bias).chunk(3, dim=-1)
            q, k, v = heads(q, h), heads(k, h), heads(v, h)
            if caches[i] is not None:
                k = torch.cat([caches[i][0], k], dim=2)
                v = torch.cat([caches[i][1], v], dim=2)
            caches[i] = (k, v)
            a = sa.out_proj(merge(F.scaled_dot_product_attention(q, k, v)))
            x = layer.norm1(x + a)
            ca = layer.multihead_attn
            wq, bq = ca.in_proj_weight[:d], ca.in_proj_bias[:d]
            q = heads(F.linear(x, wq, bq), h)
            a = ca.out_proj(merge(F.scaled_dot_product_attention(q, *cross_kv[i])))
            x = layer.norm2(x + a)
            x = layer.norm3(x + layer.linear2(F.relu(layer.linear1(x))))
        x = model.transformer.decoder.norm(x)
        token = (x @ model.embedding.weight.T).argmax(-1)
        out.append(token)
    return torch.cat(out, dim=1)


def uncached_greedy(model, src, n):
    memory = model.transformer.encoder(model.embed(src))
    tokens = torch.ones(src.shape[0], 1, dtype=torch.long)
    for _ in range(n):
        causal = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1])
        x = model.transformer.decoder(model.embed(tokens), memory, tgt_mask=causal)
        nxt = (x[:, -1:] @ model.embedding.weight.T).argmax(-1)
        tokens = torch.cat([tokens, nxt], dim=1)
    return tokens[:, 1:]


def decoding(lengths, warmup, repeats):
    torch.manual_seed(2)
    model = Seq2Seq().eval()
    src = torch.randint(3, 999, (1, 32))
    results = []
    with torch.inference_mode():
        check = 16
        assert torch.equal(cached_greedy(model, src, check), uncached_greedy(model, src, check))
        for n in lengths:
            cached = timing(lambda: cached_greedy(model, src, n), warmup, repeats)
            slow = min(repeats, 3) if n >= 256 else repeats
            uncached = timing(lambda: uncached_greedy(model, src, n), min(warmup, 1), slow)
            results.append(
                {
                    "tokens": n,
                    "cached": cached,
                    "uncached": uncached,
                    "cached_tokens_per_sec": n / (cached["median_ms"] / 1e3),
                    "uncached_tokens_per_sec": n / (uncached["median_ms"] / 1e3),
                }
            )
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--decode-lengths", default="32,128,512")
    parser.add_argument("--dropout", type=float, default=0.3, help="of the training step: tf train's translation default")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warmup, repeats = 2, args.repeats
    lengths = [int(n) for n in args.decode_lengths.split(",")]
    result = {
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "mha_forward": [
            mha_forward([8, 128, 512], 8, warmup, repeats),
            mha_forward([8, 1024, 512], 8, warmup, min(repeats, 5)),
        ],
        "train_step": train_step(warmup, min(repeats, 11), args.dropout),
        "decoding": decoding(lengths, warmup, min(repeats, 5)),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
