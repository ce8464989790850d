#!/usr/bin/env python3
"""CTranslate2 on a tf model's weights: converts them and times `translate_batch`.

`cargo xtask ctranslate2` (and `cargo xtask bench`, given a translation model) writes an export
folder and runs this script on it:

- `config.json`: the model's `TransformerConfig` (what `tf train` writes as `model`);
- `weights.safetensors`: every parameter under its burn module path, in PyTorch's layout
  (a Linear's weight as [d_out, d_in]; a LayerNorm's gamma and beta as weight and bias);
- `sources.json`: `{"sources": [[id, ...], ...], "max_decoding_lengths": [N, ...],
  "cases": [{"name", "beam", "batch", "compute_type"}, ...], "repeats": R}`, with each
  source's most output tokens (EOS included), as `tf translate` limits it.

It builds a CTranslate2 `TransformerSpec` from those weights (our interleaved sinusoid table is
passed explicitly: CTranslate2's own is [sin | cos]), saves it under `ct2/`, translates the
sources once per case and prints one JSON line: per case the median seconds, the target tokens
produced (EOS not counted) and the output ids. Token strings are the ids themselves, so no
tokenizer stands between the two programs. Needs `pip install ctranslate2==4.8.5` (numpy comes
with it).
"""

import argparse
import json
import os
import statistics
import struct
import sys
import time

import numpy as np

try:
    import ctranslate2
    from ctranslate2.specs import common_spec, transformer_spec
except ImportError:  # the caller reports the skip
    print(json.dumps({"skipped": "python3 cannot import ctranslate2"}))
    sys.exit(0)

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3, as tf-train's vocabularies have them
ACTIVATIONS = {"Relu": common_spec.Activation.RELU, "Gelu": common_spec.Activation.GELUTanh}


def read_safetensors(path):
    """name -> float32 array, from the file's JSON header and raw little-endian data."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[start:end], dtype="<f4").reshape(info["shape"]).copy()
    return tensors


def sinusoid_table(max_len, d_model):
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...): interleaved, as ours."""
    pos = np.arange(max_len, dtype=np.float64)[:, None]
    even = np.arange(0, d_model, 2, dtype=np.float64)[None, :]
    angle = pos / np.power(10000.0, even / d_model)
    table = np.zeros((max_len, d_model), dtype=np.float64)
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle)[:, : d_model // 2]
    return table.astype(np.float32)


def build_spec(config, w):
    layer = config["layer"]
    if layer.get("head_width") is not None:
        raise SystemExit("CTranslate2's heads are d_model / heads wide; this model sets head_width")
    if config.get("head_counts"):
        raise SystemExit("a model with pruned heads has no CTranslate2 layout (heads per layer differ)")
    if layer["activation"] not in ACTIVATIONS:
        raise SystemExit(f"activation {layer['activation']} has no CTranslate2 equivalent")
    positional = config.get("positional_encoding", "Sinusoidal")
    if positional == "Rotary":
        raise SystemExit("CTranslate2's TransformerSpec has no rotary encoder-decoder self-attention")
    pre_norm = layer["norm_position"] == "Pre"
    final_norm = config["final_norm"] == "Always" or (config["final_norm"] == "Auto" and pre_norm)
    if final_norm != pre_norm:
        raise SystemExit("CTranslate2 has a final LayerNorm exactly when the layers are pre-norm")
    spec = transformer_spec.TransformerSpec.from_config(
        (config["n_encoder_layers"], config["n_decoder_layers"]),
        layer["n_heads"],
        pre_norm=pre_norm,
        activation=ACTIVATIONS[layer["activation"]],
    )
    spec.config.layer_norm_epsilon = layer["layer_norm_eps"]

    def linear(target, name, rows=None):
        weight, bias = w[f"{name}.weight"], w.get(f"{name}.bias")
        if rows is not None:
            weight = weight[rows]
            bias = None if bias is None else bias[rows]
        target.weight = np.ascontiguousarray(weight)
        if bias is not None:
            target.bias = np.ascontiguousarray(bias)

    def norm(target, name):
        target.gamma, target.beta = w[f"{name}.weight"], w[f"{name}.bias"]

    d = layer["d_model"]
    sharing = config["embedding_sharing"]
    src_embedding = w["src_embedding.embedding.weight"]
    tgt_embedding = src_embedding if sharing == "All" else w["tgt_embedding.embedding.weight"]
    if "positional.table.Learned.weight" in w:
        table = w["positional.table.Learned.weight"]
    elif positional == "None":
        table = np.zeros((config["max_len"], d), dtype=np.float32)
    else:
        table = sinusoid_table(config["max_len"], d)
    for stack, embedding in ((spec.encoder, src_embedding), (spec.decoder, tgt_embedding)):
        target = stack.embeddings[0] if isinstance(stack.embeddings, list) else stack.embeddings
        target.weight = embedding
        stack.scale_embeddings = True  # × √d_model, as ScaledEmbedding
        stack.position_encodings.encodings = table
        if final_norm:
            prefix = "encoder" if stack is spec.encoder else "decoder"
            norm(stack.layer_norm, f"{prefix}.final_norm.norm")
    for i, target in enumerate(spec.encoder.layer):
        p = f"encoder.layers.{i}"
        linear(target.self_attention.linear[0], f"{p}.self_attn.in_proj")
        linear(target.self_attention.linear[1], f"{p}.self_attn.out_proj")
        norm(target.self_attention.layer_norm, f"{p}.self_attn_residual.norm")
        linear(target.ffn.linear_0, f"{p}.ffn.inner")
        linear(target.ffn.linear_1, f"{p}.ffn.outer")
        norm(target.ffn.layer_norm, f"{p}.ffn_residual.norm")
    for i, target in enumerate(spec.decoder.layer):
        p = f"decoder.layers.{i}"
        linear(target.self_attention.linear[0], f"{p}.self_attn.in_proj")
        linear(target.self_attention.linear[1], f"{p}.self_attn.out_proj")
        norm(target.self_attention.layer_norm, f"{p}.self_attn_residual.norm")
        # Cross-attention: W^Q alone, then W^K | W^V fused (rows of our in_proj).
        linear(target.attention.linear[0], f"{p}.cross_attn.in_proj", slice(0, d))
        linear(target.attention.linear[1], f"{p}.cross_attn.in_proj", slice(d, 3 * d))
        linear(target.attention.linear[2], f"{p}.cross_attn.out_proj")
        norm(target.attention.layer_norm, f"{p}.cross_attn_residual.norm")
        linear(target.ffn.linear_0, f"{p}.ffn.inner")
        linear(target.ffn.linear_1, f"{p}.ffn.outer")
        norm(target.ffn.layer_norm, f"{p}.ffn_residual.norm")
    if sharing == "Separate":
        linear(spec.decoder.projection, "generator")
    else:
        spec.decoder.projection.weight = tgt_embedding
    tokens = lambda n: SPECIAL + [str(i) for i in range(len(SPECIAL), n)]
    spec.register_source_vocabulary(tokens(config["src_vocab"]))
    spec.register_target_vocabulary(tokens(config["tgt_vocab"]))
    return spec


def translate(translator, sources, limits, case):
    """Each source's best hypothesis, decoded as `tf translate` batches them: sorted by length,
    in groups of `batch`, each group limited to its longest source's length limit (one
    `max_decoding_length` per call; at batch 1 that is the sentence's own)."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    outputs = [None] * len(sources)
    batch = case["batch"]
    for start in range(0, len(order), batch):
        group = order[start:start + batch]
        results = translator.translate_batch(
            [sources[i] for i in group],
            max_batch_size=batch,
            beam_size=case["beam"],
            max_decoding_length=max(limits[i] for i in group),
        )
        for i, result in zip(group, results):
            outputs[i] = result.hypotheses[0]
    return outputs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", required=True, help="the export folder")
    parser.add_argument("--threads", type=int, default=2, help="intra_threads")
    args = parser.parse_args()

    config = json.load(open(os.path.join(args.export, "config.json")))
    job = json.load(open(os.path.join(args.export, "sources.json")))
    weights = read_safetensors(os.path.join(args.export, "weights.safetensors"))
    spec = build_spec(config, weights)
    spec.validate()
    out_dir = os.path.join(args.export, "ct2")
    os.makedirs(out_dir, exist_ok=True)
    spec.save(out_dir)

    sources = [[str(t) for t in ids] for ids in job["sources"]]
    limits = job["max_decoding_lengths"]
    results = []
    translators = {}
    for case in job["cases"]:
        compute_type = case["compute_type"]
        if compute_type not in translators:
            translators[compute_type] = ctranslate2.Translator(
                out_dir, device="cpu", compute_type=compute_type,
                inter_threads=1, intra_threads=args.threads,
            )
        translator = translators[compute_type]
        run = lambda: translate(translator, sources, limits, case)
        outputs = run()  # warm-up
        seconds = []
        for _ in range(job["repeats"]):
            start = time.perf_counter()
            outputs = run()
            seconds.append(time.perf_counter() - start)
        ids = [[int(t) if t not in SPECIAL else SPECIAL.index(t) for t in hypothesis] for hypothesis in outputs]
        results.append({
            "name": case["name"],
            "seconds": statistics.median(seconds),
            "all_seconds": seconds,
            "target_tokens": sum(len(r) for r in ids),
            "outputs": ids,
        })
    print(json.dumps({"ctranslate2": ctranslate2.__version__, "threads": args.threads, "cases": results}))


if __name__ == "__main__":
    main()
