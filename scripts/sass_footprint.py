#!/usr/bin/env python3
"""Where a kernel's instructions come from: reads the SASS that scripts/sass.sh writes (nvdisasm -gi:
each instruction under its source line and inlining chain) and counts one kernel's instructions by call
site, outermost first, to a chosen depth.

    python3 scripts/sass_footprint.py build-sass/logits.sm_90.sass 'k_coopE' --depth 2 \
        --cold 'block_search(' --cold logits_coop.cuh:474-530

KERNEL is a regular expression on the mangled name. --cold (repeatable) names code the step being
studied never runs (a fallback path, another mode): a call site whose source line contains the given
text, or a range of lines (file:first-last) of the kernel's own code. The report gives the total
without them: the instructions a launch of that step may fetch (an upper bound: branches inside a
call site still count).
A straight-line path runs each of its instructions once per block, so every one is fetched into the
SM's instruction cache at least once per launch (docs/logits.md, "Code footprint").
"""
import argparse
import collections
import re

MARK = re.compile(r'//## File "([^"]+)", line (\d+)(?: inlined at "([^"]+)", line (\d+))?')
INSN = re.compile(r'\s*/\*[0-9a-f]{4,}\*/')
SECTION = re.compile(r'\.text\.(\S+):$')


RANGE = re.compile(r"^(\S+):(\d+)-(\d+)$")
_lines = {}


def source_line(path, line):
    if path not in _lines:
        try:
            with open(path, errors="replace") as f:
                _lines[path] = f.read().split("\n")
        except OSError:
            _lines[path] = []
    text = _lines[path]
    return text[line - 1] if 0 < line <= len(text) else ""


def is_cold(chain, cold):
    """Whether the chain (full paths, outermost first) runs through a cold site."""
    for c in cold:
        m = RANGE.match(c)
        for path, line in chain:
            if m:
                if path.rsplit("/", 1)[-1] == m.group(1) and int(m.group(2)) <= line <= int(m.group(3)):
                    return True
            elif c in source_line(path, line):
                return True
    return False


def site(path, line):
    return (path, int(line))


def label(s):
    return f"{s[0].rsplit('/', 1)[-1]}:{s[1]}"


def chains(sass_path, kernel):
    """(chain outermost first, instruction count) for each kernel whose mangled name matches."""
    per = collections.defaultdict(collections.Counter)
    kern, chain, in_marks = None, (), False
    marks = []
    with open(sass_path) as f:
        for line in f:
            m = SECTION.match(line.strip())
            if m:
                kern = m.group(1) if re.search(kernel, m.group(1)) else None
                chain, marks, in_marks = (), [], False
                continue
            if kern is None:
                continue
            m = MARK.search(line)
            if m:
                # A run of marks is one chain, innermost first: "A inlined at B", "B inlined at C", ...
                if not in_marks:
                    marks, in_marks = [site(m.group(1), m.group(2))], True
                if m.group(3):
                    marks.append(site(m.group(3), m.group(4)))
                chain = tuple(reversed(marks))
                continue
            if INSN.match(line):
                in_marks = False
                per[kern][chain] += 1
    return per


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sass")
    ap.add_argument("kernel", help="regular expression on the mangled kernel name")
    ap.add_argument("--depth", type=int, default=1, help="call-site levels to group by (outermost first)")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--cold", action="append", default=[], help="a call-site chain the step never runs")
    a = ap.parse_args()
    per = chains(a.sass, a.kernel)
    if not per:
        raise SystemExit(f"no kernel matches {a.kernel!r} in {a.sass}")
    for name, counts in per.items():
        total = sum(counts.values())
        hot = collections.Counter()
        for ch, n in counts.items():
            if not is_cold(ch, a.cold):
                hot[" <- ".join(label(x) for x in reversed(ch[: a.depth])) or "?"] += n
        print(f"{name}: {total} instructions ({total * 16 // 1024} KiB); "
              f"without the cold sites {sum(hot.values())} ({sum(hot.values()) * 16 // 1024} KiB)")
        for s, n in hot.most_common(a.top):
            print(f"  {n:7d}  {s}")


if __name__ == "__main__":
    main()
