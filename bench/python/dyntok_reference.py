#!/usr/bin/python3
"""A straightforward Python implementation of batch-level BPE merging, written from the spec
(specs/dynamic-bpe.md, the reference repository's dynamic_bpe.py semantics): the peer lmfuse-bench
dyntok times in the same run, and the reference tests/python/test_dyntok*.py compare lmfuse against.

It reads a HuggingFace tokenizer.json itself (independently of lmfuse's C loader) and works on raw
bytes, like lmfuse: per step, an insertion-ordered count of every VALID adjacent pair (overlapping
occurrences count), the most frequent pair (ties: first occurrence in row-major order), applied left
to right without overlap in every sequence; a merged byte string that already is a token is that
token (string identity); special tokens never merge; early stop when nothing is left.

CLI (lmfuse-bench runs it with /usr/bin/python3 and parses the last stdout line):

    dyntok_reference.py --tokenizer-json PATH --data PATH.jsonl [--batch 32] [--merges 200]
                        [--repeats 3] [--langs en,de,...]

stdout: ONE JSON line {"peer": "python_dyntok_ref", "merges": m, "batch": B, "langs": {lang:
{"tokens_in": n, "tokens_out": n, "merges_done": k, "ms_per_batch": t}}, "python": "3.x"}.
"""
import argparse
import json
import sys
import time

import regex

DEFAULT_PATTERN = (r"'s|'t|'re|'ve|'m|'ll|'d| ?[\p{L}\p{M}]+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"
                   r"|\s+(?!\S)|\s+")
SPACE_LIKE = b" \t\n"
WHITESPACE = b" \t\n\r\x0b\x0c"

SPECIAL, BYTE_FALLBACK = 1, 2


def _gpt2_unicode_to_byte():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class Vocab:
    """Token id -> raw bytes and flags, and the canonical id of a byte string."""

    def __init__(self, token_bytes, flags):
        self.token_bytes = token_bytes  # list of bytes (None for unused ids)
        self.flags = flags
        self.find = {}
        # Canonical id: not special; a regular token before a byte-fallback one; then the smallest id.
        order = sorted((i for i, b in enumerate(token_bytes) if b is not None and not flags[i] & SPECIAL),
                       key=lambda i: (flags[i] & BYTE_FALLBACK != 0, i))
        for i in order:
            self.find.setdefault(token_bytes[i], i)

    @classmethod
    def from_tokenizer_json(cls, path):
        with open(path, encoding="utf-8") as f:
            tj = json.load(f)
        model = tj["model"]
        text = json.dumps([tj.get("pre_tokenizer"), tj.get("decoder")])
        byte_level = '"ByteLevel"' in text
        metaspace = not byte_level and ("\u2581" in json.dumps(tj.get("normalizer"), ensure_ascii=False)
                                         or '"Metaspace"' in text)
        u2b = _gpt2_unicode_to_byte()
        size = max(max(model["vocab"].values()), max((a["id"] for a in tj["added_tokens"]), default=0)) + 1
        token_bytes, flags = [None] * size, [0] * size
        for s, i in model["vocab"].items():
            if byte_level:
                b = bytes(u2b[c] for c in s)
            elif metaspace and len(s) == 6 and s.startswith("<0x") and s.endswith(">"):
                b = bytes([int(s[3:5], 16)])
                flags[i] |= BYTE_FALLBACK
            elif metaspace:
                b = s.replace("\u2581", " ").encode()
            else:
                b = s.encode()
            token_bytes[i] = b
        for a in tj["added_tokens"]:
            if a.get("special"):
                token_bytes[a["id"]] = a["content"].encode()
                flags[a["id"]] |= SPECIAL
            elif token_bytes[a["id"]] is None:
                token_bytes[a["id"]] = a["content"].encode()
        return cls(token_bytes, flags)


def valid_pretokens(t, pattern):
    """VALID(a, b) of the reference "pretokens" mode, on t = bytes(a) + bytes(b)."""
    if any(c in SPACE_LIKE for c in t[1:]) and (t == b"\n\n" or not all(c in SPACE_LIKE for c in t)):
        return False
    try:
        s = t.decode("utf-8")
    except UnicodeDecodeError:
        return True
    m = pattern.match(s)
    return m is not None and m.end() == len(s)


def valid_whitespace(t):
    return not any(c in WHITESPACE for c in t[1:])


def merge_batch(vocab, seqs, max_merges, mode="pretokens", pattern=DEFAULT_PATTERN, word_ids=None):
    """Merges a batch (list of lists of ids). Returns dict with ids, spans ((start, len) in the
    sequence's input positions), merges [(left, right, result, count)], new_tokens [bytes],
    decompositions [[base ids]]."""
    pat = regex.compile(pattern) if mode == "pretokens" else None
    tb = list(vocab.token_bytes)
    base = len(tb)
    new_index = {}
    decomp = {}
    seqs = [list(s) for s in seqs]
    spans = [[(i, 1) for i in range(len(s))] for s in seqs]
    words = [list(w) for w in word_ids] if mode == "words" else None
    memo = {}

    def special(i):
        return i < base and vocab.flags[i] & SPECIAL

    def valid(s, i):
        a, b = seqs[s][i], seqs[s][i + 1]
        if mode == "words":
            wa, wb = words[s][i], words[s][i + 1]
            return wa >= 0 and wa == wb and not special(a) and not special(b)
        key = (a, b)
        v = memo.get(key)
        if v is None:
            if special(a) or special(b):
                v = False
            elif mode == "pretokens":
                v = valid_pretokens(tb[a] + tb[b], pat)
            else:
                v = valid_whitespace(tb[a] + tb[b])
            memo[key] = v
        return v

    merges = []
    while len(merges) < max_merges:
        counts = {}
        for s in range(len(seqs)):
            for i in range(len(seqs[s]) - 1):
                if valid(s, i):
                    p = (seqs[s][i], seqs[s][i + 1])
                    counts[p] = counts.get(p, 0) + 1
        if not counts:
            break
        best, best_count = None, 0
        for p, c in counts.items():  # insertion order = first occurrence order; strict > keeps the first
            if c > best_count:
                best, best_count = p, c
        a, b = best
        t = tb[a] + tb[b]
        r = vocab.find.get(t)
        if r is None:
            r = new_index.get(t)
        if r is None:
            r = len(tb)
            tb.append(t)
            new_index[t] = r
            decomp[r] = decomp.get(a, [a]) + decomp.get(b, [b])
        merges.append((a, b, r, best_count))
        for s in range(len(seqs)):
            seq, sp = seqs[s], spans[s]
            out, osp, ow = [], [], []
            i = 0
            while i < len(seq):
                if i + 1 < len(seq) and seq[i] == a and seq[i + 1] == b and valid(s, i):
                    out.append(r)
                    osp.append((sp[i][0], sp[i][1] + sp[i + 1][1]))
                    if words is not None:
                        ow.append(words[s][i])
                    i += 2
                else:
                    out.append(seq[i])
                    osp.append(sp[i])
                    if words is not None:
                        ow.append(words[s][i])
                    i += 1
            seqs[s], spans[s] = out, osp
            if words is not None:
                words[s] = ow
    new_ids = sorted(decomp)
    return {"ids": seqs, "spans": spans, "merges": merges,
            "new_tokens": [tb[i] for i in new_ids], "decompositions": [decomp[i] for i in new_ids]}


def load_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def batches_by_language(rows, batch):
    """The first `batch` lines of each language, in order of first appearance."""
    by = {}
    for r in rows:
        by.setdefault(r["lang"], [])
        if len(by[r["lang"]]) < batch:
            by[r["lang"]].append(r["ids"])
    return by


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer-json", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--merges", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--langs", default="")
    args = ap.parse_args()
    vocab = Vocab.from_tokenizer_json(args.tokenizer_json)
    by = batches_by_language(load_jsonl(args.data), args.batch)
    langs = [l for l in args.langs.split(",") if l] or list(by)
    res = {}
    for lang in langs:
        seqs = by[lang]
        times = []
        for _ in range(max(1, args.repeats)):
            t0 = time.perf_counter()
            out = merge_batch(vocab, seqs, args.merges)
            times.append(time.perf_counter() - t0)
        times.sort()
        res[lang] = {"tokens_in": sum(map(len, seqs)), "tokens_out": sum(map(len, out["ids"])),
                     "merges_done": len(out["merges"]), "ms_per_batch": 1e3 * times[len(times) // 2]}
    print(json.dumps({"peer": "python_dyntok_ref", "merges": args.merges, "batch": args.batch,
                      "langs": res, "python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
