#!/usr/bin/env python3
"""The study of a de→en translator in docs/inspection.md: ALTI+'s source share along the
translation, the heads patching finds carrying a swapped noun, and each attribution method's and
cross-attention head's alignment error rate against eflomal's alignment (a silver standard).

    pip install eflomal matplotlib
    python3 xtask/inspection_study.py --model runs/de-en --data ../shared/data/multi30k \
        --out runs/de-en/study [--tf target/release/tf] [--limit 1000]

Steps, each kept in --out and skipped when its output is there:
1. eflomal aligns train + test_2016_flickr (whitespace-separated words, both directions),
   symmetrised with grow-diag-final-and (Koehn et al., 2005); the test lines are kept as
   `eflomal.align`.
2. `tf align --heads` reads an alignment off each attribution method (all but integrated
   gradients) and each cross-attention head while the reference translations are
   teacher-forced, scored against eflomal's (`aer.json`; attributions in `aligned/`).
3. `tf patch` on test sentences with one noun swapped for another of the same gender and token
   count (`patching/`), and `tf heads` for the heads' importance (`heads.json`).
4. A summary (`study.json`, printed as Markdown) and the figures `source-share.png` and
   `cross-head-aer.png`.
"""

import argparse
import gzip
import json
import subprocess
import sys
from pathlib import Path

# Nouns of one gender swap without touching the article: (gender, nouns).
NOUNS = {
    "masculine": ["Mann", "Hund", "Junge", "Ball", "Strand", "Baum", "Tisch", "Berg"],
    "feminine": ["Frau", "Straße", "Gruppe", "Wand", "Menge", "Bühne", "Katze", "Brücke"],
    "neuter": ["Mädchen", "Kind", "Wasser", "Gebäude", "Fahrrad", "Auto", "Boot", "Pferd"],
}
SHARE_METHODS = ["alti+", "value-zeroing", "gradient", "gradient-x-input"]
MAX_POSITION = 20


def lines(path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        # One space between words: the words eflomal and `tf align` count are the same.
        return [" ".join(line.split()) for line in f.read().splitlines()]


def corpus(data, split, lang):
    for name in (f"{split}.{lang}", f"{split}.{lang}.gz"):
        if (data / name).is_file():
            return lines(data / name)
    sys.exit(f"missing {split}.{lang}[.gz] in {data}")


def grow_diag_final_and(forward, reverse):
    """Koehn et al.'s symmetrisation of two sets of (source, target) links."""
    union = forward | reverse
    links = forward & reverse
    sources = {s for s, _ in links}
    targets = {t for _, t in links}
    neighbours = [(-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]
    grown = True
    while grown:
        grown = False
        for s, t in sorted(links):
            for ds, dt in neighbours:
                link = (s + ds, t + dt)
                if link in union and link not in links and (
                    link[0] not in sources or link[1] not in targets
                ):
                    links.add(link)
                    sources.add(link[0])
                    targets.add(link[1])
                    grown = True
    for s, t in sorted(forward) + sorted(reverse):
        if s not in sources and t not in targets:
            links.add((s, t))
            sources.add(s)
            targets.add(t)
    return links


def parse(line):
    return {tuple(int(i) for i in link.split("-")) for link in line.split()}


def pharaoh(links):
    return " ".join(f"{s}-{t}" for s, t in sorted(links))


def eflomal_alignment(data, out):
    path = out / "eflomal.align"
    if path.is_file():
        return
    from eflomal import Aligner

    train_de, train_en = corpus(data, "train", "de"), corpus(data, "train", "en")
    test_de, test_en = corpus(data, "test_2016_flickr", "de"), corpus(data, "test_2016_flickr", "en")
    forward, reverse = out / "eflomal.fwd", out / "eflomal.rev"
    print(f"eflomal: aligning {len(train_de)} + {len(test_de)} sentence pairs", flush=True)
    Aligner().align(
        train_de + test_de,
        train_en + test_en,
        links_filename_fwd=str(forward),
        links_filename_rev=str(reverse),
    )
    fwd = forward.read_text().splitlines()[-len(test_de):]
    rev = reverse.read_text().splitlines()[-len(test_de):]
    symmetric = [pharaoh(grow_diag_final_and(parse(f), parse(r))) for f, r in zip(fwd, rev)]
    (out / "test.de").write_text("\n".join(test_de) + "\n")
    (out / "test.en").write_text("\n".join(test_en) + "\n")
    path.write_text("\n".join(symmetric) + "\n")


def run(command):
    print("$ " + " ".join(str(c) for c in command), flush=True)
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True)
    if done.returncode != 0:
        return None, done.stderr
    return done.stdout, done.stderr


def align(tf, model, out, limit):
    path = out / "aer.json"
    if not path.is_file():
        stdout, stderr = run([
            tf, "align", "--model", model, "--source", out / "test.de", "--target",
            out / "test.en", "--reference", out / "eflomal.align", "--heads", "--limit", limit,
            "--out", out / "aligned", "--json", path,
        ])
        if stdout is None:
            sys.exit(stderr)
        print(stdout)
    return json.loads(path.read_text())


def swaps(sentence):
    """`sentence` with its first known noun swapped for each other noun of its gender."""
    words = sentence.split()
    for i, word in enumerate(words):
        nouns = next((n for n in NOUNS.values() if word in n), None)
        if nouns is not None:
            return [" ".join(words[:i] + [other] + words[i + 1:]) for other in nouns if other != word]
    return []


def patch(tf, model, out, count):
    """Mean effect of each head over `count` test sentences, each with one noun swapped (the
    first swap whose token count matches and whose translation changes)."""
    folder = out / "patching"
    folder.mkdir(exist_ok=True)
    effects, examples = {}, []
    for clean in (out / "test.de").read_text().splitlines():
        if len(examples) == count:
            break
        for corrupt in swaps(clean):
            target = folder / f"{len(examples)}"
            stdout, _ = run([tf, "patch", "--model", model, "--clean", clean, "--corrupt",
                             corrupt, "--out", target])
            if stdout is None:  # different token counts
                continue
            result = json.loads((target / "patching.json").read_text())
            if result["metric"]["kind"] != "logit_difference":
                continue  # the same translation: no noun to tell apart
            examples.append({
                "clean": clean,
                "corrupt": corrupt,
                "clean_translation": " ".join(result["clean_translation"]),
                "corrupt_translation": " ".join(result["corrupt_translation"]),
                "metric": result["metric"],
            })
            for heads in result["heads"]:
                for layer, row in enumerate(heads["effect"]):
                    for head, effect in enumerate(row):
                        effects.setdefault((heads["kind"], layer, head), []).append(effect)
            break
    mean = {key: sum(v) / len(v) for key, v in effects.items()}
    return examples, mean


def source_shares(out):
    """Mean source share of each method's prediction at each target position (EOS left out)."""
    shares = {}
    for method in SHARE_METHODS:
        sums, counts = [0.0] * MAX_POSITION, [0] * MAX_POSITION
        relative_sums, relative_counts = [0.0] * 10, [0] * 10
        for line in (out / "aligned" / f"{method}.jsonl").read_text().splitlines():
            a = json.loads(line)
            rows = len(a["target_tokens"]) - 1
            for t in range(rows):
                source, prefix = sum(a["source"][t]), sum(a["target"][t])
                share = source / max(source + prefix, 1e-30)
                if t < MAX_POSITION:
                    sums[t] += share
                    counts[t] += 1
                decile = min(9, t * 10 // rows)
                relative_sums[decile] += share
                relative_counts[decile] += 1
        shares[method] = {
            "by_position": [s / c for s, c in zip(sums, counts) if c],
            "sentences_at_position": [c for c in counts if c],
            "by_decile": [s / c for s, c in zip(relative_sums, relative_counts)],
        }
    return shares


def method_agreement(out, methods):
    """AER of each method's alignment against cross-attention's (`attention`)."""
    def read(name):
        return [parse(l) for l in (out / "aligned" / f"{name}.align").read_text().splitlines()]

    attention = read("attention")
    agreement = {}
    for method in methods:
        ours = read(method)
        common = sum(len(a & b) for a, b in zip(ours, attention))
        total = sum(len(a) + len(b) for a, b in zip(ours, attention))
        agreement[method] = 1 - 2 * common / total
    return agreement


def figures(out, shares, scores):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for method, s in shares.items():
        ax.plot(range(1, len(s["by_position"]) + 1), s["by_position"], marker="o", label=method)
    ax.set_xticks(range(1, MAX_POSITION + 1, 2))
    ax.set_xlabel("target token (1 = first)")
    ax.set_ylabel("source share of the prediction")
    ax.set_title("How much each prediction draws on the source (test_2016_flickr)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "source-share.png", dpi=120)

    heads = [s for s in scores if s["aligner"].startswith("cross ")]
    layers = 1 + max(int(s["aligner"].split()[1].split(".")[0]) for s in heads)
    per_layer = 1 + max(int(s["aligner"].split(".")[1]) for s in heads)
    grid = [[0.0] * per_layer for _ in range(layers)]
    for s in heads:
        layer, head = (int(i) for i in s["aligner"].split()[1].split("."))
        grid[layer][head] = s["aer"]
    fig, ax = plt.subplots(figsize=(1.2 * per_layer + 2, 1.0 * layers + 1.5))
    image = ax.imshow(grid, cmap="viridis_r", vmin=0, vmax=1)
    for layer in range(layers):
        for head in range(per_layer):
            ax.text(head, layer, f"{grid[layer][head]:.2f}", ha="center", va="center", color="w")
    ax.set_xlabel("head")
    ax.set_ylabel("decoder layer")
    ax.set_xticks(range(per_layer))
    ax.set_yticks(range(layers))
    ax.set_title("AER of each cross-attention head vs eflomal")
    fig.colorbar(image)
    fig.tight_layout()
    fig.savefig(out / "cross-head-aer.png", dpi=120)


def importance(tf, model, out):
    path = out / "heads.json"
    if not path.is_file():
        stdout, stderr = run([tf, "heads", "--model", model, "--json", path])
        if stdout is None:
            sys.exit(stderr)
    return json.loads(path.read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("runs/de-en"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/multi30k"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--tf", type=Path, default=Path("target/release/tf"))
    parser.add_argument("--limit", type=int, default=1000, help="test pairs to align")
    parser.add_argument("--patch-pairs", type=int, default=20, help="swapped-noun pairs to patch")
    args = parser.parse_args()
    out = args.out or args.model / "study"
    out.mkdir(parents=True, exist_ok=True)

    eflomal_alignment(args.data, out)
    scores = align(args.tf, args.model, out, args.limit)
    methods = [s["aligner"] for s in scores if not s["aligner"].startswith("cross ")]
    shares = source_shares(out)
    agreement = method_agreement(out, methods)
    examples, head_effects = patch(args.tf, args.model, out, args.patch_pairs)
    heads = importance(args.tf, args.model, out)
    figures(out, shares, scores)
    study = {
        "scores": scores,
        "agreement_with_cross_attention": agreement,
        "source_shares": shares,
        "patching": {
            "examples": examples,
            "mean_head_effect": [
                {"kind": k, "layer": l, "head": h, "effect": e}
                for (k, l, h), e in sorted(head_effects.items(), key=lambda x: -x[1])
            ],
        },
        "heads": heads,
    }
    (out / "study.json").write_text(json.dumps(study, indent=1))

    print("| aligner | AER vs eflomal | precision | recall | AER vs cross-attention |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for s in scores:
        versus = agreement.get(s["aligner"])
        versus = f"{versus:.3f}" if versus is not None else ""
        print(f"| {s['aligner']} | {s['aer']:.3f} | {s['precision']:.3f} | {s['recall']:.3f} | {versus} |")
    print("\nsource share by target position:")
    for method, s in shares.items():
        print(method, " ".join(f"{x:.3f}" for x in s["by_position"]))
        print(method, "by decile", " ".join(f"{x:.3f}" for x in s["by_decile"]))
    print(f"\npatching over {len(examples)} swapped-noun pairs, strongest heads:")
    for row in study["patching"]["mean_head_effect"][:8]:
        print(row)
    print(f"wrote {out / 'study.json'}, {out / 'source-share.png'}, {out / 'cross-head-aer.png'}")


if __name__ == "__main__":
    main()
