#!/usr/bin/env python3
"""How many instructions one thread issues along one path through a kernel's loop: reads the SASS that
scripts/sass.sh writes and walks from the loop's first instruction to its back edge, deciding each
conditional branch, so a step's per-token work can be read without a GPU (docs/logits.md, "Per-token
work at large batches"). A count of instructions a warp issues, not a time.

KERNEL is a regular expression on the mangled name; LOOP_TEXT names the loop by its back edge's source
line (the innermost line of the branch that closes it; the largest such loop is taken), by its text or
as FILE:LINE (logits_coop.cuh:168: the one loop of that line, where several share its text). A branch is
decided, in this order, by:
  --trips TEXT=N   a loop whose back edge's line holds TEXT runs N times (back edges: once otherwise);
  --take TEXT      branches whose line holds TEXT are taken (the jump happens);
  --fall TEXT      branches whose line holds TEXT fall through;
  --cold TEXT      a successor whose first instruction comes from a cold site (as in
                   scripts/sass_footprint.py: source text on its inlining chain, or =FILE:LINE) is
                   not entered when the other one is not cold.
Other branches fall through and are listed (--fall-rest: counted), so no path is decided silently. Which way a source
condition compiles (a jump over the body or into it) is the compiler's choice: check new decisions
with -v, which prints the path.

The combine pass's chunk loop on the B = 256 bar's path (list mode's candidate lists, K = 3 bf16
models, temperature 0.8, top-p, Y not written), for a warp other than warp 0 (whose thread 0 also
writes the chunk's partial), a sampled row without top-k (lean partials), one round of appends and no
class newly past its cap; --take 'if (tot == 0u) return' instead of the --trips for a warp with no
token to append (before 2026-11-28, later: --take 'cls != kNone8'):

    python3 scripts/sass_path.py build-sass/logits.sm_90.sass 'k_combineILb0ELi1E' \\
        'for (int64_t c = w.first; c < p.nchunks; c += w.step)' \\
        --trips 'for (int i = 0; i < cp.n; ++i)=3' --take 'if (m.sparse)' --take 'if (plaus)' \\
        --take 'if (nuc)' --take 'if (p.job.bias)' --take 'd.r = LMF_FDIV(1.0f, b)' \\
        --take 'if (p.need_y' --cold lmf_f16_to_f32 --cold 'LMF_FDIV(y[q], T.b)' \\
        --cold 'if (v + q >= V) y[q] = ninf()' --cold 'sel8(y, j)' --cold 'load1(m, v + j)' --fall-rest \\
        --take 'if (!LEAD || threadIdx.x == 0)' --take 'if (threadIdx.x == 0) {' \\
        --take 'if (!fin) *bad |= fold_models' --take 'if (v + kPer > V)' --take 'if (fast) {' \\
        --take 'if (cr.plaus)' --take 'if (cr.nuc)' --take 'if (!lean)' --take 'if (kstop < kClasses)' \\
        --trips 'b < tot; b += 32u)=1'

(The last two --take came after the counts below: without the first the path also ran the row's last
group's -inf fill, 24 instructions a chunk; the second decides a branch whose taken side starts with an
instruction nvdisasm gives no line of its own (it inherits the cold slow division's). With both,
today's 979 and 795 are 955 and 771, and the second pass's 1,238 is 1,214.)
(2026-11-27: 1,687 instructions per 2048-token chunk, 1,350 with --take 'cls != kNone8', i.e. 211 and
169 a token; after the exp-sum went to double, 1,465 and 1,128; with REDUX warp reductions, 1,361 and
1,024; with predicated prefetches, 1,324 and 987; with the plain fold of the models, 1,239 and 917; with
leaner appends, exp by FMAs and the dense fold, 1,001 and 809; with the temperature's reciprocal once
per block, 979 and 795. The second combine pass of the rows its lists cannot decide: the same arguments
with 'k_combineILb0ELi3E' and --take 'if (warm && kind == SK_TOPP)' --take 'cls != kNone8': 1,456, then
1,448, 1,411, 1,356, 1,258 and 1,238.)
(2026-11-28, with both --take above: 955 and 771, second pass 1,214; with a group's exp-sum in fp32 and
the degree-6 exp, 909, 725 and 1,206; with the fused fold, 887, 703 and 1,180; with the classes on
g = ymax - y, 879, 695 and 1,173; with 32-bit prefetch addresses, 859, 675 and 1,153; with the
chunk's argmax by float compares, 845 and 661; with the chunk's max from the raw bits, 832 and 648.
Later that day, with nvdisasm 12.4, which decodes the VIADDs that 11.8 left out: 873 and 682; with the
packed appends, 784 (846 in two rounds); with lean partials and lmf_lg_exp_nonpos, 731 (793) and 592.)
A loop whose back edge is an unconditional jump (its test at the top) cannot be given --trips: decide
the branches into it instead. Where a condition and the call it guards share a line
('if (!fin) *bad |= fold_models<true>(...)'), both successors start on that line, so --cold on the
callee marks both: decide that branch with --take / --fall.
"""
import argparse
import collections
import re
import sys

import sass_footprint as sf

# "@P1 BRA P0, `(.L_x_9)": conditional where either predicate is given
BRANCH = re.compile(r"(@!?U?P\w+\s+)?BRA(?:\.\w+)*\s+(!?U?P\w+,\s*)?`?\((\.L_x_\d+)\)")
LABEL = re.compile(r"^(\.L_x_\d+):")
INSN = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s*(.*?)\s*;")


def read(sass_path, kernel):
    """The first matching kernel's instructions as (address, text, inlining chain) and its labels'
    indices."""
    ins, labels, first = [], {}, None
    for kern, _, chain, line in sf.kernel_lines(sass_path, kernel):
        if first is None:
            first = kern
        elif kern != first:
            break
        m = LABEL.match(line.strip())
        if m:
            labels[m.group(1)] = len(ins)
            continue
        m = INSN.match(line)
        if m:
            ins.append((int(m.group(1), 16), m.group(2), chain))
    gaps = sum((b[0] - a[0]) // 16 - 1 for a, b in zip(ins, ins[1:]))
    if gaps:  # a disassembler that skips what it cannot decode (scripts/sass.sh's header says which)
        print(f"warning: {gaps} instructions of the kernel are missing from {sass_path}", file=sys.stderr)
    return ins, labels


def site_text(chain):
    return sf.source_line(chain[-1]) if chain else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sass")
    ap.add_argument("kernel")
    ap.add_argument("loop", help="source text on the line of the loop's back edge")
    ap.add_argument("--trips", action="append", default=[])
    ap.add_argument("--take", action="append", default=[])
    ap.add_argument("--fall", action="append", default=[])
    ap.add_argument("--cold", action="append", default=[])
    ap.add_argument("--depth", type=int, default=0, help="also count the path by call site, to this depth")
    ap.add_argument("--fall-rest", action="store_true", help="count the undecided branches, do not list them")
    ap.add_argument("-v", action="store_true", help="print the path")
    a = ap.parse_args()
    ins, labels = read(a.sass, a.kernel)
    if not ins:
        raise SystemExit(f"no kernel matches {a.kernel!r} in {a.sass}")
    trips = [(t.rsplit("=", 1)[0], int(t.rsplit("=", 1)[1])) for t in a.trips]

    def target(text):
        m = BRANCH.match(text)
        return (m, labels.get(m.group(3))) if m else (None, None)

    loops = []  # (size, head, back edge) of backward branches at the loop's line
    for i, (_, text, chain) in enumerate(ins):
        m, t = target(text)
        if m and t is not None and t <= i and (a.loop in site_text(chain) or (chain and a.loop == sf.label(chain[-1]))):
            loops.append((i - t, t, i))
    if not loops:
        raise SystemExit(f"no backward branch on a line holding {a.loop!r}")
    _, head, end = max(loops)

    def cold(i):
        return sf.passes_through(ins[i][2], a.cold)

    left, undecided, n, i, by = {}, [], 0, head, collections.Counter()
    while True:
        addr, text, chain = ins[i]
        n += 1
        if a.depth:
            by[" <- ".join(sf.label(x) for x in reversed(chain[: a.depth])) or "?"] += 1
        if a.v:
            print(f"{addr:6x}  {text[:64]:64s}  {sf.label(chain[-1]) if chain else ''}")
        if i == end:
            break
        if text.startswith(("EXIT", "RET", "CALL")):
            raise SystemExit(f"the path left the loop at {addr:#x} ({text}): decide the branch before it")
        m, t = target(text)
        if m is None:
            i += 1
            continue
        if t is None:
            raise SystemExit(f"{addr:#x}: {m.group(3)} is not a label of this kernel")
        if not m.group(1) and not m.group(2):  # unconditional
            i = t
            continue
        line = site_text(chain)
        trip = next((k for s, k in trips if s in line), None) if t <= i else None
        if trip is not None:
            left[i] = left.get(i, trip) - 1
            if left[i] > 0:
                i = t
            else:
                del left[i]
                i += 1
            continue
        if any(s in line for s in a.take):
            i = t
        elif any(s in line for s in a.fall):
            i += 1
        elif cold(t) != cold(i + 1):
            i = i + 1 if cold(t) else t
        else:
            undecided.append(f"{addr:#x} {text} [{sf.label(chain[-1]) if chain else '?'}: {line.strip()}]")
            i += 1
        if n > 1_000_000:
            raise SystemExit("the path does not end: give the loops their --trips")
    print(f"{n} instructions per trip of the loop at {ins[head][0]:#x}..{ins[end][0]:#x}")
    for site, k in by.most_common():
        print(f"  {k:7d}  {site}")
    rest = list(dict.fromkeys(undecided))
    if a.fall_rest:
        print(f"  {len(rest)} undecided branches fell through (without --fall-rest: listed)")
    else:
        for u in rest:
            print(f"  undecided, fell through: {u}")


if __name__ == "__main__":
    sys.exit(main())
