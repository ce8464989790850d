"""Sequence lengths of joint and separate BPE and Unigram vocabularies on Multi30k (docs/translation.md).

Usage: python3 xtask/measure_vocabularies.py [MULTI30K_DIR]   (default ../shared/data/multi30k)
Needs `pip install tokenizers`.
"""
import gzip, os, sys, time
from tokenizers import Tokenizer, models, trainers, pre_tokenizers, normalizers, decoders
D=os.path.join(sys.argv[1] if len(sys.argv)>1 else "../shared/data/multi30k", "")
def read(n): return gzip.open(D+n,"rt",encoding="utf-8").read().splitlines()
tr_de,tr_en,va_de,va_en=read("train.de.gz"),read("train.en.gz"),read("val.de.gz"),read("val.en.gz")
alpha=[chr(c) for c in list(range(32,127))+list(range(0xa1,0x100))]
def make(kind,size,texts):
    if kind=="bpe":
        tok=Tokenizer(models.BPE(unk_token="<unk>"))
        tr=trainers.BpeTrainer(vocab_size=size,min_frequency=2,initial_alphabet=alpha,special_tokens=["<pad>","<s>","</s>","<unk>"],show_progress=False)
    else:
        tok=Tokenizer(models.Unigram())
        tr=trainers.UnigramTrainer(vocab_size=size,special_tokens=["<pad>","<s>","</s>","<unk>"],unk_token="<unk>",show_progress=False)
    tok.normalizer=normalizers.NFC()
    tok.pre_tokenizer=pre_tokenizers.Metaspace()
    tok.decoder=decoders.Metaspace()
    t=time.time(); tok.train_from_iterator(texts,tr); el=time.time()-t
    return tok,el
def stats(tok,lines):
    enc=tok.encode_batch(lines,add_special_tokens=False)
    n=sum(len(e.ids) for e in enc); unk=sum(e.ids.count(3) for e in enc)
    words=sum(len(l.split()) for l in lines)
    rt=sum(tok.decode(e.ids)==l for e,l in zip(enc,lines))/len(lines)
    return n/len(lines), n/words, unk, rt
print("| vocabulary | learn (s) | val de tokens/sentence | tokens/word | val en tokens/sentence | tokens/word | <unk> | round trip |")
print("|---|---|---|---|---|---|---|---|")
for kind in ["bpe","unigram"]:
    for size in [8000]:
        tok,el=make(kind,size,tr_de+tr_en)
        d=stats(tok,va_de); e=stats(tok,va_en)
        print(f"| joint {kind} {size} | {el:.1f} | {d[0]:.1f} | {d[1]:.2f} | {e[0]:.1f} | {e[1]:.2f} | {d[2]+e[2]} | {min(d[3],e[3]):.3f} |")
    tde,el1=make(kind,8000,tr_de); ten,el2=make(kind,8000,tr_en)
    d=stats(tde,va_de); e=stats(ten,va_en)
    print(f"| separate {kind} 8000 + 8000 | {el1+el2:.1f} | {d[0]:.1f} | {d[1]:.2f} | {e[0]:.1f} | {e[1]:.2f} | {d[2]+e[2]} | {min(d[3],e[3]):.3f} |")
