#!/usr/bin/env python3
"""The PyTorch reference for `tf_inspect`'s attributions and activation patching.

    pip install torch safetensors
    python3 xtask/attribution_reference.py [OUT_DIR]   # default: tests/fixtures/attribution

For each case it builds a random `torch.nn.Transformer` (non-trivial LayerNorms and biases) with
token embeddings, writes its state dict as `tf import-torch` reads it (NAME.safetensors), and
computes, with its own forward pass written here on those weights (checked against
`nn.Transformer`'s own to 1e-5 first), every attribution method of `tf attribute` and the
activation patching of `tf patch` (NAME.json). `cargo test --release --workspace --test
attribution_parity` compares ours with these within 1e-4, and reruns this script where Python
has torch.

The definitions, as docs/inspection.md gives them: the decoder is teacher-forced on BOS + target,
each position predicting the next token and EOS last; token embeddings are scaled by
sqrt(d_model), sinusoidal positions added, the output projection is the target embedding
transposed; rows of attention, rollout and norm are normalised over the source and the prefix
apart, those of ALTI+, value zeroing and the gradient methods over both together.
"""

import json
import math
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

BOS, EOS = 1, 2


# --- The forward pass, with hooks --------------------------------------------------------------


class Hooks:
    """Keeps every activation by its hook name, and replaces those in `patches` (name -> fn)."""

    def __init__(self, patches=None):
        self.patches = patches or {}
        self.cache = {}

    def __call__(self, name, x):
        if name in self.patches:
            x = self.patches[name](x)
        self.cache[name] = x
        return x


def layer_norm(x, p, prefix, eps):
    return nn.functional.layer_norm(
        x, x.shape[-1:], p[prefix + ".weight"], p[prefix + ".bias"], eps
    )


def attention(p, prefix, x_q, x_kv, causal, heads, hooks, name):
    """nn.MultiheadAttention's computation, per head: [B, L, d] -> [B, L, d]."""
    w, b = p[prefix + ".in_proj_weight"], p[prefix + ".in_proj_bias"]
    batch, q_len, d = x_q.shape
    k_len, d_k = x_kv.shape[1], d // heads

    def split(t, length):
        return t.view(batch, length, heads, d_k).transpose(1, 2)

    q = hooks(name + ".q", split(x_q @ w[:d].T + b[:d], q_len))
    k = hooks(name + ".k", split(x_kv @ w[d : 2 * d].T + b[d : 2 * d], k_len))
    v = hooks(name + ".v", split(x_kv @ w[2 * d :].T + b[2 * d :], k_len))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d_k)
    if causal:
        blocked = torch.triu(torch.ones(q_len, k_len, dtype=torch.bool), diagonal=1)
        scores = scores.masked_fill(blocked, float("-inf"))
    pattern = hooks(name + ".pattern", scores.softmax(-1))
    z = hooks(name + ".z", pattern @ v)
    merged = z.transpose(1, 2).reshape(batch, q_len, d)
    return hooks(
        name + ".out", merged @ p[prefix + ".out_proj.weight"].T + p[prefix + ".out_proj.bias"]
    )


def residual(x, sublayer, p, norm, cfg):
    if cfg["norm_first"]:
        return x + sublayer(layer_norm(x, p, norm, cfg["layer_norm_eps"]))
    return layer_norm(x + sublayer(x), p, norm, cfg["layer_norm_eps"])


def feed_forward(p, prefix, x, hooks, name):
    hidden = hooks(
        name + ".hidden",
        torch.relu(x @ p[prefix + ".linear1.weight"].T + p[prefix + ".linear1.bias"]),
    )
    return hooks(
        name + ".out", hidden @ p[prefix + ".linear2.weight"].T + p[prefix + ".linear2.bias"]
    )


def positions(length, d):
    pos = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(0, d, 2, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, i / d)
    pe = torch.zeros(length, d, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return pe.float()


def embed(p, table, ids, d):
    return p[table][ids] * math.sqrt(d)


def forward(p, cfg, src, tgt, hooks, token_embeddings=None):
    """Logits [B, T, vocab] of the teacher-forced pass; `token_embeddings` = (source, target)
    scaled token embeddings to use instead of the tables' (the gradient methods)."""
    d, h = cfg["d_model"], cfg["nhead"]
    e_src, e_tgt = token_embeddings or (
        embed(p, "src_embedding.weight", src, d),
        embed(p, "tgt_embedding.weight", tgt, d),
    )
    x = hooks("embed.src", e_src + positions(src.shape[1], d))
    for l in range(cfg["num_encoder_layers"]):
        pre, name = f"encoder.layers.{l}", f"enc.{l}"
        x = hooks(name + ".resid_pre", x)
        x = residual(
            x,
            lambda y: attention(p, pre + ".self_attn", y, y, False, h, hooks, name + ".attn"),
            p,
            pre + ".norm1",
            cfg,
        )
        x = hooks(name + ".resid_mid", x)
        x = residual(
            x, lambda y: feed_forward(p, pre, y, hooks, name + ".ffn"), p, pre + ".norm2", cfg
        )
        x = hooks(name + ".resid_post", x)
    memory = layer_norm(x, p, "encoder.norm", cfg["layer_norm_eps"])
    y = hooks("embed.tgt", e_tgt + positions(tgt.shape[1], d))
    for l in range(cfg["num_decoder_layers"]):
        pre, name = f"decoder.layers.{l}", f"dec.{l}"
        y = hooks(name + ".resid_pre", y)
        y = residual(
            y,
            lambda t: attention(p, pre + ".self_attn", t, t, True, h, hooks, name + ".attn"),
            p,
            pre + ".norm1",
            cfg,
        )
        y = hooks(name + ".resid_mid", y)
        y = residual(
            y,
            lambda t: attention(
                p, pre + ".multihead_attn", t, memory, False, h, hooks, name + ".cross"
            ),
            p,
            pre + ".norm2",
            cfg,
        )
        y = hooks(name + ".resid_mid_cross", y)
        y = residual(
            y, lambda t: feed_forward(p, pre, t, hooks, name + ".ffn"), p, pre + ".norm3", cfg
        )
        y = hooks(name + ".resid_post", y)
    y = layer_norm(y, p, "decoder.norm", cfg["layer_norm_eps"])
    return hooks("logits", y @ p["tgt_embedding.weight"].T)


def greedy(p, cfg, source, max_output):
    out = []
    src = torch.tensor([source])
    for _ in range(max_output):
        logits = forward(p, cfg, src, torch.tensor([[BOS] + out]), Hooks())
        token = int(logits[0, -1].argmax())
        if token == EOS:
            break
        out.append(token)
    return out


# --- Attributions ------------------------------------------------------------------------------


def normalised(rows):
    sums = rows.sum(-1, keepdim=True)
    return torch.where(sums > 0, rows / torch.where(sums > 0, sums, torch.ones_like(sums)), rows)


def shares(source, target):
    total = source.sum(-1, keepdim=True) + target.sum(-1, keepdim=True)
    return source / total, target / total


def rollout(layers):
    result = None
    for a in layers:
        a = 0.5 * a + 0.5 * torch.eye(a.shape[0])
        result = a if result is None else a @ result
    return result


def weighted_values(cache, p, prefix, name):
    """[q, k, d]: sum over heads of alpha_h,ij v_h,j W^O_h."""
    pattern, value = cache[name + ".pattern"][0], cache[name + ".v"][0]  # [h, q, k], [h, k, d_k]
    heads, _, d_k = value.shape
    w_o = p[prefix + ".out_proj.weight"].T.reshape(heads, d_k, -1)  # [h, d_k, d]
    transformed = value @ w_o  # [h, k, d]
    return torch.einsum("hqk,hkd->qkd", pattern, transformed)


def alti_block(cache, p, cfg, prefix, norm, name, residual_name, output_name):
    """ALTI's [q, k + 1] contributions (the residual last), rows normalised."""
    mixed = weighted_values(cache, p, prefix, name)
    x = cache[residual_name][0]
    y = cache[output_name][0]
    terms = torch.cat([mixed, x.unsqueeze(1)], 1)  # [q, k + 1, d]
    if not cfg["norm_first"]:
        z = terms.sum(1) + p[prefix + ".out_proj.bias"]
        sigma = torch.sqrt(
            z.var(-1, unbiased=False, keepdim=True) + cfg["layer_norm_eps"]
        )  # [q, 1]
        terms = (terms - terms.mean(-1, keepdim=True)) / sigma.unsqueeze(1) * p[norm + ".weight"]
    closeness = (y.abs().sum(-1, keepdim=True) - (y.unsqueeze(1) - terms).abs().sum(-1)).clamp(
        min=0
    )
    return normalised(closeness)


def fold_residual(c):
    own = c[:, :-1].clone()
    own += torch.diag(c[:, -1])
    return own


def compose(encoder, decoder, s_len, t_len):
    r = torch.eye(s_len)
    for c in encoder:
        r = c @ r
    source, target = torch.zeros(t_len, s_len), torch.eye(t_len)
    for prefix, from_source in decoder:
        source = prefix @ source + from_source @ r
        target = prefix @ target
    return source, target


def alti_plus(p, cfg, src, tgt):
    hooks = Hooks()
    forward(p, cfg, src, tgt, hooks)
    c = hooks.cache
    encoder = [
        fold_residual(
            alti_block(
                c,
                p,
                cfg,
                f"encoder.layers.{l}.self_attn",
                f"encoder.layers.{l}.norm1",
                f"enc.{l}.attn",
                f"enc.{l}.resid_pre",
                f"enc.{l}.resid_mid",
            )
        )
        for l in range(cfg["num_encoder_layers"])
    ]
    decoder = []
    for l in range(cfg["num_decoder_layers"]):
        pre = f"decoder.layers.{l}"
        own = fold_residual(
            alti_block(
                c,
                p,
                cfg,
                pre + ".self_attn",
                pre + ".norm1",
                f"dec.{l}.attn",
                f"dec.{l}.resid_pre",
                f"dec.{l}.resid_mid",
            )
        )
        cross = alti_block(
            c,
            p,
            cfg,
            pre + ".multihead_attn",
            pre + ".norm2",
            f"dec.{l}.cross",
            f"dec.{l}.resid_mid",
            f"dec.{l}.resid_mid_cross",
        )
        decoder.append((cross[:, -1:] * own, cross[:, :-1]))
    return compose(encoder, decoder, src.shape[1], tgt.shape[1])


def cosine_distance(a, b):
    return (1 - nn.functional.cosine_similarity(a, b, dim=-1)).clamp(min=0)


def value_zeroing(p, cfg, src, tgt):
    clean = Hooks()
    forward(p, cfg, src, tgt, clean)
    s_len, t_len = src.shape[1], tgt.shape[1]

    def zeroing(point, position):
        def patch(v):
            v = v.clone()
            v[:, :, position] = 0
            return v

        return {point: patch}

    def scores(stack, layer, zeroings):
        out = f"{stack}.{layer}.resid_post"
        columns = []
        for patches in zeroings:
            hooks = Hooks(patches)
            forward(p, cfg, src, tgt, hooks)
            columns.append(cosine_distance(hooks.cache[out][0], clean.cache[out][0]))
        return normalised(torch.stack(columns, 1))

    encoder = [
        scores("enc", l, [zeroing(f"enc.{l}.attn.v", j) for j in range(s_len)])
        for l in range(cfg["num_encoder_layers"])
    ]
    decoder = []
    for l in range(cfg["num_decoder_layers"]):
        zeroings = [zeroing(f"dec.{l}.cross.v", j) for j in range(s_len)]
        zeroings += [zeroing(f"dec.{l}.attn.v", j) for j in range(t_len)]
        c = scores("dec", l, zeroings)
        decoder.append((c[:, s_len:], c[:, :s_len]))
    return compose(encoder, decoder, s_len, t_len)


def gradient_rows(p, cfg, src, tgt, output, steps, times_input):
    d = cfg["d_model"]
    e_src, e_tgt = embed(p, "src_embedding.weight", src, d), embed(
        p, "tgt_embedding.weight", tgt, d
    )
    rows_src, rows_tgt = [], []
    for t, token in enumerate(output):
        g_src, g_tgt = torch.zeros_like(e_src), torch.zeros_like(e_tgt)
        for k in range(steps):
            scale = 1.0 if steps == 1 else (k + 0.5) / steps
            x_src = (e_src * scale).detach().requires_grad_()
            x_tgt = (e_tgt * scale).detach().requires_grad_()
            logits = forward(p, cfg, src, tgt, Hooks(), (x_src, x_tgt))
            logits.log_softmax(-1)[0, t, token].backward()
            g_src += x_src.grad / steps
            g_tgt += x_tgt.grad / steps
        if times_input:
            g_src, g_tgt = g_src * e_src, g_tgt * e_tgt
        rows_src.append(g_src[0].norm(dim=-1))
        rows_tgt.append(g_tgt[0].norm(dim=-1))
    return shares(torch.stack(rows_src), torch.stack(rows_tgt))


def attributions(p, cfg, source, target, steps):
    prefix, output = [BOS] + target, target + [EOS]
    src, tgt = torch.tensor([source]), torch.tensor([prefix])
    hooks = Hooks()
    forward(p, cfg, src, tgt, hooks)
    c = hooks.cache
    last = cfg["num_decoder_layers"] - 1
    mean = lambda name: c[name + ".pattern"][0].mean(0)  # noqa: E731
    enc_layers = range(cfg["num_encoder_layers"])
    dec_layers = range(cfg["num_decoder_layers"])
    norm = lambda prefix, name: normalised(
        weighted_values(c, p, prefix, name).norm(dim=-1)
    )  # noqa: E731
    methods = {
        "attention": (mean(f"dec.{last}.cross"), mean(f"dec.{last}.attn")),
        "rollout": (
            mean(f"dec.{last}.cross") @ rollout([mean(f"enc.{l}.attn") for l in enc_layers]),
            rollout([mean(f"dec.{l}.attn") for l in dec_layers]),
        ),
        "norm": (
            norm(f"decoder.layers.{last}.multihead_attn", f"dec.{last}.cross"),
            norm(f"decoder.layers.{last}.self_attn", f"dec.{last}.attn"),
        ),
        "alti+": alti_plus(p, cfg, src, tgt),
        "value-zeroing": value_zeroing(p, cfg, src, tgt),
        "gradient": gradient_rows(p, cfg, src, tgt, output, 1, False),
        "gradient-x-input": gradient_rows(p, cfg, src, tgt, output, 1, True),
        "integrated-gradients": gradient_rows(p, cfg, src, tgt, output, steps, True),
    }
    return {name: {"source": s.tolist(), "target": t.tolist()} for name, (s, t) in methods.items()}


# --- Activation patching -----------------------------------------------------------------------


def patching(p, cfg, clean, corrupt, target, max_output):
    prefix, expected = [BOS] + target, target + [EOS]
    corrupt_translation = greedy(p, cfg, corrupt, max_output)
    position = next(
        (i for i, (a, b) in enumerate(zip(expected, corrupt_translation + [EOS])) if a != b), None
    )
    tgt = torch.tensor([prefix])

    def score(logits):
        if position is None:
            lp = logits.log_softmax(-1)[0]
            return float(sum(lp[t, token] for t, token in enumerate(expected)))
        corrupt_token = (
            corrupt_translation[position] if position < len(corrupt_translation) else EOS
        )
        return float(logits[0, position, expected[position]] - logits[0, position, corrupt_token])

    clean_hooks = Hooks()
    clean_score = score(forward(p, cfg, torch.tensor([clean]), tgt, clean_hooks))
    corrupt_score = score(forward(p, cfg, torch.tensor([corrupt]), tgt, Hooks()))

    def effect(point, select):
        def patch(x):
            x = x.clone()
            x[select] = clean_hooks.cache[point][select]
            return x

        s = score(forward(p, cfg, torch.tensor([corrupt]), tgt, Hooks({point: patch})))
        return (s - corrupt_score) / (clean_score - corrupt_score)

    def residual(stack, layers, length):
        points = [f"{stack}.{l}.resid_pre" for l in range(layers)] + [
            f"{stack}.{layers - 1}.resid_post"
        ]
        return [[effect(point, (slice(None), i)) for i in range(length)] for point in points]

    def heads(stack, block, layers):
        return [
            [effect(f"{stack}.{l}.{block}.z", (slice(None), h)) for h in range(cfg["nhead"])]
            for l in range(layers)
        ]

    enc, dec = cfg["num_encoder_layers"], cfg["num_decoder_layers"]
    return {
        "corrupt_translation": corrupt_translation,
        "position": position,
        "clean_score": clean_score,
        "corrupt_score": corrupt_score,
        "encoder_residual": residual("enc", enc, len(clean)),
        "decoder_residual": residual("dec", dec, len(prefix)),
        "heads": {
            "encoder_self": heads("enc", "attn", enc),
            "decoder_self": heads("dec", "attn", dec),
            "cross": heads("dec", "cross", dec),
        },
    }


# --- Cases -------------------------------------------------------------------------------------


def case(name, out_dir, *, d_model, nhead, enc, dec, d_ff, norm_first, vocab, seed):
    torch.manual_seed(seed)
    model = nn.Transformer(
        d_model=d_model,
        nhead=nhead,
        num_encoder_layers=enc,
        num_decoder_layers=dec,
        dim_feedforward=d_ff,
        batch_first=True,
        norm_first=norm_first,
    ).eval()
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if "norm" in key:
                tensor.copy_(
                    torch.randn_like(tensor) * 0.3 + (1.0 if key.endswith("weight") else 0.0)
                )
            elif key.endswith("bias"):
                tensor.normal_(0.0, 0.2)
    p = {key: value.detach().clone() for key, value in model.state_dict().items()}
    p["src_embedding.weight"] = torch.randn(vocab, d_model) * d_model**-0.5
    p["tgt_embedding.weight"] = torch.randn(vocab, d_model) * d_model**-0.5
    cfg = {
        "kind": "transformer",
        "d_model": d_model,
        "nhead": nhead,
        "num_encoder_layers": enc,
        "num_decoder_layers": dec,
        "dim_feedforward": d_ff,
        "norm_first": norm_first,
        "activation": "relu",
        "layer_norm_eps": 1e-5,
        "dropout": 0.0,
    }
    generator = torch.Generator().manual_seed(seed)
    tokens = lambda n: torch.randint(3, vocab, (n,), generator=generator).tolist()  # noqa: E731
    source, target = tokens(5), tokens(4)
    corrupt = list(source)
    corrupt[2] = 3 + (source[2] - 3 + 1) % (vocab - 3)

    with torch.no_grad():  # our forward pass is nn.Transformer's
        src, tgt = torch.tensor([source]), torch.tensor([[BOS] + target])
        e = lambda table, ids: embed(p, table, ids, d_model) + positions(
            ids.shape[1], d_model
        )  # noqa: E731
        causal = torch.triu(torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool), diagonal=1)
        theirs = (
            model(e("src_embedding.weight", src), e("tgt_embedding.weight", tgt), tgt_mask=causal)
            @ p["tgt_embedding.weight"].T
        )
        ours = forward(p, cfg, src, tgt, Hooks())
        assert (theirs - ours).abs().max() < 1e-5, (theirs - ours).abs().max()

    max_output = 6
    with torch.no_grad():
        patched = patching(p, cfg, source, corrupt, target, max_output)
    expected = {
        "config": cfg,
        "source": source,
        "target": target,
        "corrupt": corrupt,
        "max_output": max_output,
        "ig_steps": 8,
        "attributions": attributions(p, cfg, source, target, 8),
        "patching": patched,
        "torch_version": torch.__version__,
    }
    save_file(
        {key: value.contiguous() for key, value in p.items()}, str(out_dir / f"{name}.safetensors")
    )
    (out_dir / f"{name}.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(
        f"{name}: patching metric at position {patched['position']}, clean {patched['clean_score']:.3f}, corrupt {patched['corrupt_score']:.3f}"
    )


def main():
    out_dir = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).resolve().parent.parent / "tests/fixtures/attribution"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_default_dtype(torch.float32)
    case(
        "post_2x2",
        out_dir,
        d_model=16,
        nhead=4,
        enc=2,
        dec=2,
        d_ff=32,
        norm_first=False,
        vocab=13,
        seed=3,
    )
    case(
        "pre_1x2",
        out_dir,
        d_model=12,
        nhead=3,
        enc=1,
        dec=2,
        d_ff=24,
        norm_first=True,
        vocab=11,
        seed=8,
    )


if __name__ == "__main__":
    main()
