"""lmfuse.combine_logits and friends as a PyTorch user meets them: the ctypes mirror of logits.h
(layout, constants, defaults), what the bindings reject in Python (TypeError / ValueError) and
what the library rejects (LmfuseError, nothing written), the shape of the results, the method
helpers' coefficients, and the input forms (strided rows, row_index, broadcast rows, lists)."""

import ctypes
import os
import shutil
import subprocess

import pytest
import torch

import lmfuse
from lmfuse import LmfuseError, _ffi
from lmfuse import logits as L

import _logits_reference as R

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
INCLUDE = os.path.join(REPO, "include")

STRUCTS = {
    "lmf_logits_model_t": _ffi.LogitsModel,
    "lmf_logits_params_t": _ffi.LogitsParams,
    "lmf_logits_outputs_t": _ffi.LogitsOutputs,
}
CONSTANTS = ["LMF_ROW_OK", "LMF_ROW_ALL_MASKED", "LMF_ROW_NONFINITE", "LMF_ROW_BAD_INDEX",
             "LMF_LOGITS_MAX_MODELS", "LMF_LOGITS_PARAMS_VERSION", "LMF_LOGITS_OUTPUTS_VERSION"]


def t(values):
    return torch.tensor(values, dtype=torch.float32)


ZL, ZSF, ZSB = t([2, 1, 0.5, -1, 0]), t([1, 3, 0, -2, 0.5]), t([1.5, 1, 0.5, -1, 0])


def test_layout_matches_header(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("needs a C compiler")
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "lmfuse/logits.h"',
             "int main(void) {"]
    for cname, cls in STRUCTS.items():
        lines.append('printf("%s sizeof %%zu\\n", sizeof(%s));' % (cname, cname))
        for field, _ in cls._fields_:
            lines.append('printf("%s %s %%zu\\n", offsetof(%s, %s));' % (cname, field, cname,
                                                                          field))
    for c in CONSTANTS:
        lines.append('printf("%s %%lld\\n", (long long)%s);' % (c, c))
    lines += ["return 0;", "}"]
    src, exe = tmp_path / "layout.c", tmp_path / "layout"
    src.write_text("\n".join(lines))
    subprocess.run([cc, "-std=c99", "-I", INCLUDE, str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    seen = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            cls = STRUCTS[parts[0]]
            got = ctypes.sizeof(cls) if parts[1] == "sizeof" else getattr(cls, parts[1]).offset
            assert got == int(parts[2]), "%s.%s: ctypes %d, C %s" % (parts[0], parts[1], got,
                                                                     parts[2])
            seen.add(parts[0])
        else:
            assert getattr(_ffi, parts[0]) == int(parts[1]), parts[0]
    assert seen == set(STRUCTS)
    # the header's field list is the mirror's: a field added in C but not here fails above only
    # when it changes an offset, so compare the names too
    header = open(os.path.join(INCLUDE, "lmfuse", "logits.h")).read()
    for cname, cls in STRUCTS.items():
        body = header[header.index("typedef struct " + cname[:-2]):]
        body = body[:body.index("} " + cname)]
        for field, _ in cls._fields_:
            assert field in body, (cname, field)


def test_params_and_outputs_init():
    p = _ffi.new(_ffi.LogitsParams)
    assert p.struct_size == ctypes.sizeof(_ffi.LogitsParams) and p.version == 1
    o = _ffi.new(_ffi.LogitsOutputs)
    assert o.struct_size == ctypes.sizeof(_ffi.LogitsOutputs) and o.version == 1
    assert not o.tokens and not o.logprobs
    lib = _ffi.lib()
    small = ctypes.create_string_buffer(ctypes.sizeof(_ffi.LogitsParams))
    with pytest.raises(LmfuseError) as e:
        lmfuse.errors.check(lib.lmf_logits_params_init(small, 8))
    assert e.value.status_name == "LMF_ERR_STRUCT_SIZE"


def test_result_shapes_and_dtypes():
    r = lmfuse.combine_logits(**lmfuse.eft(ZL, ZSF, ZSB), temperature=0, return_logprobs=True)
    assert r.tokens.dtype == torch.int32 and r.tokens.shape == (1,)
    assert r.status.dtype == torch.int32 and r.token_logprob.dtype == torch.float32
    assert r.lse.shape == (1,) and r.logprobs.shape == (1, 5) and r.gedi_logp_desired is None
    assert r.ok.tolist() == [True] and r.tokens.item() == 1
    assert "tokens" in repr(r)
    r = lmfuse.combine_logits([ZL], temperature=0)
    assert r.logprobs is None


def test_method_helpers_coefficients():
    def coeffs(kw):
        return [m.coeff for m in kw["models"]]

    assert coeffs(lmfuse.eft(ZL, ZSF, ZSB)) == [1.0, 1.0, -1.0]
    assert coeffs(lmfuse.eft(ZL, ZSF, ZSB, beta=0.5)) == [1.0, 0.5, -0.5]
    kw = lmfuse.eft(ZL, [ZSF, ZSB], ZSB, weights=[0.3, 0.7])
    assert coeffs(kw) == pytest.approx([1.0, 0.3, 0.7, -1.0])
    assert coeffs(lmfuse.proxy_tune(ZL, ZSF, ZSB, alpha=2)) == [1.0, 2.0, -2.0]
    kw = lmfuse.dexperts(ZL, ZSF, ZSB)
    assert coeffs(kw) == [1.0, 2.0, -2.0] and kw["nucleus"] == (0, 0.9)
    kw = lmfuse.contrastive(ZL, ZSF, st_coef=0.8)
    assert coeffs(kw) == pytest.approx([1.0, -0.8]) and kw["plausibility"] == (0, 0.1)
    assert [m.temperature for m in kw["models"]] == [1.0, 0.5]
    assert coeffs(lmfuse.cfg(ZL, ZSF, gamma=1.5)) == [1.5, -0.5]
    assert coeffs(lmfuse.emulated_disalignment(ZL, ZSF, alpha=0.3)) == pytest.approx([1.3, -0.3])
    st = lmfuse.GeDiState.zeros(1)
    kw = lmfuse.gedi(ZL, ZSF, ZSB, st, omega=5.0)
    assert coeffs(kw) == [1.0, 0.0, 0.0] and kw["gedi"].omega == 5.0 and kw["gedi"].state is st
    # helpers take LogitsInput too (keeping row_index etc.) and do not modify it
    li = lmfuse.LogitsInput(ZSF.unsqueeze(0), coeff=7.0,
                            row_index=torch.zeros(2, dtype=torch.int32))
    kw = lmfuse.proxy_tune(ZL.expand(2, 5), li, ZSB.expand(2, 5))
    assert kw["models"][1].row_index is li.row_index and li.coeff == 7.0
    with pytest.raises(ValueError):
        lmfuse.eft(ZL, [ZSF, ZSB], ZSB, weights=[1.0])
    with pytest.raises(ValueError):
        lmfuse.eft(ZL, ZSF, ZSB, weights=[1.0])


def test_python_side_rejections():
    with pytest.raises(ValueError, match="2 coefficients for 3 models"):
        lmfuse.combine_logits([ZL, ZSF, ZSB], coeffs=[1, 1], temperature=0)
    with pytest.raises(TypeError, match="int64"):
        lmfuse.combine_logits([torch.arange(5)], temperature=0)
    with pytest.raises(TypeError, match="float64"):
        lmfuse.combine_logits([ZL.double()], temperature=0)
    with pytest.raises(TypeError):
        lmfuse.combine_logits([[1.0, 2.0]], temperature=0)
    z = torch.randn(5, 4).t()  # [4, 5], last-dim stride 4
    with pytest.raises(ValueError, match="last dimension is not contiguous"):
        lmfuse.combine_logits([z], temperature=0)
    with pytest.raises(ValueError, match="logits\\[:, -1, :\\]"):
        lmfuse.combine_logits([torch.randn(2, 3, 5)], temperature=0)
    with pytest.raises(ValueError, match="different numbers of rows"):
        lmfuse.combine_logits([torch.randn(2, 5), torch.randn(3, 5)], temperature=0)
    with pytest.raises(ValueError, match="different vocabularies"):
        lmfuse.combine_logits([torch.randn(2, 5), torch.randn(2, 6)], temperature=0)
    with pytest.raises(ValueError, match="pass seeds"):
        lmfuse.combine_logits([ZL], temperature=0.7)
    with pytest.raises(ValueError, match="empty"):
        lmfuse.combine_logits([], temperature=0)
    with pytest.raises(ValueError, match="at most 16"):
        lmfuse.combine_logits([ZL] * 17, temperature=0)
    with pytest.raises(ValueError, match="refers to model 3"):
        lmfuse.combine_logits([ZL, ZSF], plausibility=(3, 0.1), temperature=0)
    with pytest.raises(TypeError, match="plausibility"):
        lmfuse.combine_logits([ZL, ZSF], plausibility=0.1, temperature=0)
    with pytest.raises(ValueError, match="row_index has values"):
        lmfuse.combine_logits([lmfuse.LogitsInput(ZL.expand(2, 5).contiguous(),
                                                  row_index=torch.tensor([0, 2]))], temperature=0)
    with pytest.raises(ValueError, match="seeds has 3 entries for 1 rows"):
        lmfuse.combine_logits([ZL], seeds=[1, 2, 3])
    with pytest.raises(ValueError, match="2\\*\\*64"):
        lmfuse.combine_logits([ZL], seeds=[-1])
    with pytest.raises(ValueError, match="bias has 4 entries"):
        lmfuse.combine_logits([ZL], bias=torch.zeros(4), temperature=0)
    with pytest.raises(TypeError, match="bias"):
        lmfuse.combine_logits([ZL], bias=torch.zeros(5, dtype=torch.int32), temperature=0)
    st = lmfuse.GeDiState(torch.zeros(1), torch.zeros(1), torch.zeros(1))  # n must be int32
    with pytest.raises(TypeError, match="gedi.state.n"):
        lmfuse.combine_logits(**lmfuse.gedi(ZL, ZSF, ZSB, st), temperature=0)
    st = lmfuse.GeDiState.zeros(2)
    with pytest.raises(ValueError, match="2 elements|of 1 elements"):
        lmfuse.combine_logits(**lmfuse.gedi(ZL, ZSF, ZSB, st), temperature=0)
    with pytest.raises(TypeError, match="draft_tokens"):
        lmfuse.verify_draft([ZL.expand(2, 5)], torch.zeros(1, 1), draft_model=0, temperature=0)
    with pytest.raises(ValueError, match="need 4 rows"):
        lmfuse.verify_draft([ZL.expand(2, 5)], torch.zeros(1, 3, dtype=torch.int32),
                            draft_model=0, temperature=0)
    sp = lmfuse.SparseLogitsInput(torch.tensor([[0, 1]]), torch.tensor([[1.0, 2.0, 3.0]]))
    with pytest.raises(ValueError, match="differ in shape"):
        lmfuse.combine_logits([sp], vocab_out=5, temperature=0)
    with pytest.raises(ValueError, match="int32"):
        lmfuse.combine_logits([ZL], vocab_out=2 ** 32 + 5, temperature=0)
    with pytest.raises(TypeError, match="top_k"):
        lmfuse.combine_logits([ZL], top_k=2.5, temperature=0)
    with pytest.raises(ValueError, match="the context runs on"):
        class FakeCuda:
            backend, device = "cuda", 0
        lmfuse.combine_logits([ZL], temperature=0, context=FakeCuda())


def test_library_rejections_write_nothing():
    """Bad values the bindings pass through: the library names them (LmfuseError) and leaves the
    GeDi state untouched."""
    bad = [dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5), dict(min_p=-0.1),
           dict(top_k=-1), dict(plausibility=(0, 0.0)), dict(plausibility=(0, 1.5)),
           dict(nucleus=(0, 0.0)), dict(nucleus=(0, 1.5))]
    for kw in bad:
        kw.setdefault("temperature", 0.5)
        with pytest.raises(LmfuseError) as e:
            lmfuse.combine_logits([ZL, ZSF], seeds=1, **kw)
        assert e.value.status != 0 and e.value.message, kw
    for m in (lmfuse.LogitsInput(ZL, temperature=0.0), lmfuse.LogitsInput(ZL, temperature=-1.0)):
        with pytest.raises(LmfuseError):
            lmfuse.combine_logits([m], temperature=0)
    st = lmfuse.GeDiState(torch.tensor([-3.0]), torch.tensor([-4.0]),
                          torch.tensor([2], dtype=torch.int32))
    snap = st.clone()
    with pytest.raises(LmfuseError):
        lmfuse.combine_logits(**lmfuse.gedi(ZL, ZSF, ZSB, st, filter_p=2.0), temperature=0)
    with pytest.raises(LmfuseError):
        lmfuse.combine_logits(**lmfuse.gedi(ZL, ZSF, ZSB, st, logit_scale=0.0), temperature=0)
    with pytest.raises(LmfuseError):  # GeDi's models must cover the output vocabulary
        lmfuse.combine_logits(**lmfuse.gedi(ZL, ZSF[:4], ZSB, st), temperature=0, vocab_out=5)
    assert torch.equal(st.L_pos, snap.L_pos) and torch.equal(st.L_neg, snap.L_neg)
    assert torch.equal(st.n, snap.n)


def test_coeffs_list_overrides_and_bare_tensors():
    a = lmfuse.combine_logits([ZL, ZSF, ZSB], coeffs=[1, 1, -1], temperature=0,
                              return_logprobs=True)
    b = lmfuse.combine_logits(**lmfuse.eft(ZL, ZSF, ZSB), temperature=0, return_logprobs=True)
    assert torch.equal(a.logprobs, b.logprobs) and a.tokens.item() == 1
    c = lmfuse.combine_logits([lmfuse.LogitsInput(ZL, 5.0), ZSF, ZSB], coeffs=torch.tensor(
        [1.0, 1.0, -1.0]), temperature=0, return_logprobs=True)
    assert torch.equal(a.logprobs, c.logprobs)
    # mask models given as the input objects themselves
    e, am = lmfuse.LogitsInput(t([3, 2.5, 0, -1, 1])), lmfuse.LogitsInput(t([3, 1, -2, -1, 2]),
                                                                          coeff=-1)
    d = lmfuse.combine_logits([e, am], plausibility=(e, 0.1), temperature=0, return_logprobs=True)
    assert torch.isinf(d.logprobs[0, 2:4]).all() and d.tokens.item() == 1


def test_helper_dict_as_models():
    """combine_logits(lmfuse.eft(...)) is combine_logits(**lmfuse.eft(...))."""
    a = lmfuse.combine_logits(lmfuse.eft(ZL, ZSF, ZSB), temperature=0, return_logprobs=True)
    b = lmfuse.combine_logits(**lmfuse.eft(ZL, ZSF, ZSB), temperature=0, return_logprobs=True)
    assert torch.equal(a.logprobs, b.logprobs)
    zE, zA = t([3, 2.5, 0, -1, 1]), t([3, 1, -2, -1, 2])
    c = lmfuse.combine_logits(lmfuse.contrastive(zE, zA, amateur_temperature=1.0), temperature=0,
                              return_logprobs=True)
    assert torch.isinf(c.logprobs[0, 2:4]).all()
    with pytest.raises(ValueError, match="given twice"):
        lmfuse.combine_logits(lmfuse.contrastive(zE, zA), plausibility=(0, 0.5), temperature=0)
    with pytest.raises(TypeError, match="method helper"):
        lmfuse.combine_logits({"logits": [ZL]}, temperature=0)
    st = lmfuse.GeDiState.zeros(1)
    d = lmfuse.combine_logits(lmfuse.gedi(ZL, ZSF, ZSB, st), temperature=0)
    assert d.gedi_logp_desired is not None and st.n.item() == 1
    with pytest.raises(ValueError, match="GeDi is not allowed"):
        lmfuse.verify_draft(lmfuse.gedi(ZL, ZSF, ZSB, st), torch.zeros(1, 0, dtype=torch.int32),
                            draft_model=0, temperature=0)


def test_input_forms_equal_contiguous_copies():
    """Strided rows (logits[:, -1, :]), row_index, broadcast (expand) rows, 1-D rows, per-row
    coefficients and temperatures give what contiguous copies give."""
    B, T, V = 6, 3, 257
    full = [R.randn(B * T, V, seed=s).view(B, T, V) for s in (1, 2, 3)]
    last = [f[:, -1, :] for f in full]                    # strided: row stride T * V
    assert last[0].stride() == (T * V, 1)
    seeds = list(range(100, 100 + B))
    kw = dict(temperature=0.9, top_p=0.95, seeds=seeds, offsets=7, return_logprobs=True)
    a = lmfuse.combine_logits(**lmfuse.eft(*last), **kw)
    b = lmfuse.combine_logits(**lmfuse.eft(*[x.contiguous() for x in last]), **kw)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)
    # row_index: rows gathered from a bigger batch
    perm = torch.tensor([5, 0, 3, 3, 1, 2], dtype=torch.int64)
    c = lmfuse.combine_logits(**lmfuse.eft(*[lmfuse.LogitsInput(x, row_index=perm) for x in last]),
                              **kw)
    d = lmfuse.combine_logits(**lmfuse.eft(*[x[perm].contiguous() for x in last]), **kw)
    assert torch.equal(c.tokens, d.tokens) and torch.equal(c.logprobs, d.logprobs)
    # a broadcast row (expand: stride 0) and a 1-D row are one row for every output row
    one = last[2][0]
    e = lmfuse.combine_logits([last[0], last[1], lmfuse.LogitsInput(one.expand(B, V), -1.0)], **kw)
    f = lmfuse.combine_logits([last[0], last[1],
                               lmfuse.LogitsInput(one.expand(B, V).contiguous(), -1.0)], **kw)
    assert torch.equal(e.tokens, f.tokens) and torch.equal(e.logprobs, f.logprobs)
    # per-row coefficients equal per-row calls with scalar coefficients
    w = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 0.3])
    g = lmfuse.combine_logits([lmfuse.LogitsInput(last[0], coeff_rows=w),
                               lmfuse.LogitsInput(last[1], coeff_rows=1 - w)], **kw)
    for b_ in range(B):
        h = lmfuse.combine_logits([lmfuse.LogitsInput(last[0][b_], float(w[b_])),
                                   lmfuse.LogitsInput(last[1][b_], float(1 - w[b_]))],
                                  temperature=0.9, top_p=0.95, seeds=[seeds[b_]], offsets=7,
                                  return_logprobs=True)
        assert h.tokens.item() == g.tokens[b_].item()
        torch.testing.assert_close(h.logprobs[0], g.logprobs[b_], atol=1e-6, rtol=0)
    # per-row temperatures equal per-row calls
    temps = torch.tensor([0.0, 0.5, 1.0, 1.5, 0.7, 0.0])
    tr = lmfuse.combine_logits(**lmfuse.eft(*last), temperature=temps, seeds=seeds, offsets=7,
                               return_logprobs=True)
    for b_ in range(B):
        h = lmfuse.combine_logits(**lmfuse.eft(*[x[b_] for x in last]),
                                  temperature=float(temps[b_]), seeds=[seeds[b_]], offsets=7,
                                  return_logprobs=True)
        assert h.tokens.item() == tr.tokens[b_].item()
        torch.testing.assert_close(h.logprobs[0], tr.logprobs[b_], atol=1e-6, rtol=0)


def test_explicit_context_and_seeds_forms(ctx):
    z = R.randn(4, 50, seed=9)
    a = lmfuse.combine_logits([z], temperature=1.0, seeds=[3, 3, 3, 3], offsets=[0, 0, 0, 0],
                              context=ctx)
    b = lmfuse.combine_logits([z], temperature=1.0, seeds=3)
    c = lmfuse.combine_logits([z], temperature=1.0, seeds=torch.full((4,), 3, dtype=torch.int64),
                              offsets=torch.zeros(4, dtype=torch.int64))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.tokens, c.tokens)
    # the full uint64 range: a seed >= 2**63 is passed as its bits
    big = lmfuse.combine_logits([z], temperature=1.0, seeds=2 ** 64 - 1)
    bits = lmfuse.combine_logits([z], temperature=1.0, seeds=torch.full((4,), -1,
                                                                         dtype=torch.int64))
    assert torch.equal(big.tokens, bits.tokens)
