#!/usr/bin/env python3
"""Where a kernel's instructions come from: reads the SASS that scripts/sass.sh writes (nvdisasm -gi:
each instruction under its source line and inlining chain) and counts one kernel's instructions by call
site, outermost first, to a chosen depth.

KERNEL is a regular expression on the mangled name. The options name code by the text of a source
line on an instruction's chain (a call site such as 'block_search(') or by a function the kernel
calls rather than inlines ('fn:list_cut'):
  --cold TEXT       code the step being studied never runs (a fallback path, another mode);
  --cold-from TEXT  the kernel's own code from the line holding TEXT to the end of its file;
  --split TEXT      code that runs in one block only (the row's last block): reported apart.
TEXT may also be =FILE:LINE (e.g. =logits_combine.cuh:444): that one site, for a quick look.
The report gives the kernel's size, the instructions without the cold code (those a launch of the
step may fetch: an upper bound, since branches inside a call site still count) and, with --split,
how they divide between every block and the one. A path runs straight through once per block at
B = 1, so each of its instructions is fetched into the SM at least once per launch (docs/logits.md,
"Code footprint"). The bar's step (B = 1, K = 3, top-p, no log-prob rows), as docs/logits.md counts it:

    python3 scripts/sass_footprint.py build-sass/logits.sm_90.sass 'k_coopE' --cold 'block_search(' \\
        --cold 'coop_in_bin(y, me.ymax, pk.bin)' --cold-from 'With log-prob rows every block writes' \\
        --split 'coop_last(p, R' --split fn:list_cut --cold 'fold_models<true>('
    python3 scripts/sass_footprint.py build-sass/logits.sm_90.sass 'k_windowILb1E' \\
        --cold 'block_search(' --cold 'block_binned(' --cold 'recompute_y(' --cold 'b_final(p, w)' \\
        --cold 'b_sample(p, w)' --cold 'b_final_merge(' --split 'row_listcut(p, w.row)' --split fn:list_cut
"""
import argparse
import collections
import re
import shutil
import subprocess

MARK = re.compile(r'//## File "([^"]+)", line (\d+)(?: inlined at "([^"]+)", line (\d+))?')
INSN = re.compile(r"\s*/\*[0-9a-f]{4,}\*/")
SECTION = re.compile(r"\.text\.(\S+):$")
FUNCTION = re.compile(r"^\$\S+?\$(\S+):$")  # a called function's entry inside a kernel's section

_lines = {}


def source_line(site):
    """The source text of a site (path, line), or the site itself for a called function."""
    path, line = site
    if line is None:
        return path
    if path not in _lines:
        try:
            with open(path, errors="replace") as f:
                _lines[path] = f.read().split("\n")
        except OSError:
            _lines[path] = []
    text = _lines[path]
    return text[line - 1] if 0 < line <= len(text) else ""


def function_name(mangled):
    """fn:NAME for a called function (c++filt where there is one, else the mangled name)."""
    name = mangled
    if shutil.which("c++filt"):
        name = subprocess.run(["c++filt", mangled], capture_output=True, text=True).stdout.strip() or mangled
    name = name.replace("(anonymous namespace)::", "").split("(")[0].split("::")[-1]
    return f"fn:{name}"


def label(site):
    path, line = site
    return path if line is None else f"{path.rsplit('/', 1)[-1]}:{line}"


def kernel_lines(sass_path, kernel):
    """Yields (kernel, function, chain, line) for each line of the kernels matching KERNEL that is not
    an inlining mark (instructions, labels): chain is the current instruction's inlining chain,
    outermost first; function is (fn:NAME, None) inside a function the kernel calls, else None."""
    kern, func, chain, marks, in_marks = None, None, (), [], False
    with open(sass_path) as f:
        for line in f:
            stripped = line.strip()
            m = SECTION.match(stripped)
            if m:
                kern = m.group(1) if re.search(kernel, m.group(1)) else None
                func, chain, marks, in_marks = None, (), [], False
                continue
            if kern is None:
                continue
            m = FUNCTION.match(stripped)
            if m:
                func, chain, marks, in_marks = (function_name(m.group(1)), None), (), [], False
                continue
            m = MARK.search(line)
            if m:
                # A run of marks is one chain, innermost first: "A inlined at B", "B inlined at C", ...
                if not in_marks:
                    marks, in_marks = [(m.group(1), int(m.group(2)))], True
                if m.group(3):
                    marks.append((m.group(3), int(m.group(4))))
                chain = tuple(reversed(marks))
                continue
            if INSN.match(line):
                in_marks = False
            yield kern, func, chain, line


def chains(sass_path, kernel):
    """{kernel: {chain (outermost first): instructions}}; a called function's chain starts with it."""
    per = collections.defaultdict(collections.Counter)
    for kern, func, chain, line in kernel_lines(sass_path, kernel):
        if INSN.match(line):
            per[kern][((func,) if func else ()) + chain] += 1
    return per


def site_matches(site, text):
    """=FILE:LINE names one site exactly (for a quick look; line numbers drift); other text is searched
    for in the site's source line."""
    return label(site) == text[1:] if text.startswith("=") else text in source_line(site)


def passes_through(chain, texts):
    return any(site_matches(site, t) for site in chain for t in texts)


def cold_from_sites(texts, chain_sets):
    """For each --cold-from text: (file, line) of its first line in a file of the kernel's own code."""
    files = sorted({ch[0][0] for ch in chain_sets if ch})
    out = []
    for t in texts:
        for path in files:
            source_line((path, 1))  # loads the file
            hit = next((i + 1 for i, text in enumerate(_lines[path]) if t in text), None)
            if hit:
                out.append((path, hit))
                break
        else:
            raise SystemExit(f"--cold-from {t!r}: no file of the kernel's own code holds it")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sass")
    ap.add_argument("kernel", help="regular expression on the mangled kernel name")
    ap.add_argument("--depth", type=int, default=1, help="call-site levels to group by (outermost first)")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--cold", action="append", default=[])
    ap.add_argument("--cold-from", action="append", default=[])
    ap.add_argument("--split", action="append", default=[])
    a = ap.parse_args()
    per = chains(a.sass, a.kernel)
    if not per:
        raise SystemExit(f"no kernel matches {a.kernel!r} in {a.sass}")
    for name, counts in per.items():
        froms = cold_from_sites(a.cold_from, [tuple(s for s in ch if s[1] is not None) for ch in counts])
        total, hot, split = sum(counts.values()), collections.Counter(), 0
        for ch, n in counts.items():
            own = [s for s in ch if s[1] is not None]
            late = own and any(own[0][0] == f and own[0][1] >= ln for f, ln in froms)
            if late or passes_through(ch, a.cold):
                continue
            hot[" <- ".join(label(x) for x in reversed(ch[: a.depth])) or "?"] += n
            if passes_through(ch, a.split):
                split += n
        h = sum(hot.values())
        print(f"{name}: {total} instructions ({total * 16 // 1024} KiB); without the cold code {h} "
              f"({h * 16 // 1024} KiB)")
        if a.split:
            print(f"  every block: {h - split}; the split block also: {split}")
        for s, n in hot.most_common(a.top):
            print(f"  {n:7d}  {s}")


if __name__ == "__main__":
    main()
