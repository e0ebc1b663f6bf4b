"""The ZeTT hypernetwork (specs/hypernetwork.md) in PyTorch, written to mirror bminixhofer/zett's
hf_hypernet/modeling_hypernet.py and the HF RobertaModel it wraps, with the same module tree, so its
``state_dict()`` names are the released checkpoints' names. One copy, used by the benchmark's peer
(bench/python/hypernet_torch_ref.py) and by the tests (tests/python/_hypernet_reference.py).

No transformers dependency: RoBERTa's embeddings, eager self-attention (additive finfo.min padding
mask), post-LN layers with exact GELU are written out. Dropout is omitted (evaluation). Works on any
device the inputs are on.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

ROBERTA_MAX_POSITIONS = 514


class Rescaler(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.w = nn.Parameter(torch.ones((1, dim)))
        self.b = nn.Parameter(torch.ones((1, dim)))

    def forward(self, x):
        return self.w * x + self.b


class ProjectorBlock(nn.Module):
    def __init__(self, input_dim, dim, intermediate_dim):
        super().__init__()
        self.dense1 = nn.Linear(input_dim, intermediate_dim)
        self.dense2 = nn.Linear(intermediate_dim, dim)
        self.ln = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):
        h = F.gelu(self.dense2(F.gelu(self.dense1(x), approximate="tanh")), approximate="tanh")
        return self.ln(h + x)


class _SelfAttention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, h, additive_mask):
        B, T, H = h.shape
        d = H // self.heads

        def split(x):
            return x.view(B, T, self.heads, d).permute(0, 2, 1, 3)

        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d) + additive_mask
        probs = torch.softmax(scores, dim=-1)
        return torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(B, T, H)


class _SelfOutput(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-5)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        setattr(self, "self", _SelfAttention(hidden, heads))
        self.output = _SelfOutput(hidden)

    def forward(self, h, mask):
        return self.output(getattr(self, "self")(h, mask), h)


class _Intermediate(nn.Module):
    def __init__(self, hidden, inter):
        super().__init__()
        self.dense = nn.Linear(hidden, inter)

    def forward(self, x):
        return F.gelu(self.dense(x))  # exact (erf) GELU, RoBERTa's "gelu"


class _Output(nn.Module):
    def __init__(self, hidden, inter):
        super().__init__()
        self.dense = nn.Linear(inter, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-5)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class _Layer(nn.Module):
    def __init__(self, hidden, inter, heads):
        super().__init__()
        self.attention = _Attention(hidden, heads)
        self.intermediate = _Intermediate(hidden, inter)
        self.output = _Output(hidden, inter)

    def forward(self, h, mask):
        a = self.attention(h, mask)
        return self.output(self.intermediate(a), a)


class _Encoder(nn.Module):
    def __init__(self, layers, hidden, inter, heads):
        super().__init__()
        self.layer = nn.ModuleList([_Layer(hidden, inter, heads) for _ in range(layers)])


class _Embeddings(nn.Module):
    def __init__(self, vocab, hidden, max_pos):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_pos, hidden)
        self.token_type_embeddings = nn.Embedding(1, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-5)

    def forward(self, inputs_embeds, position_ids):
        type0 = self.token_type_embeddings(torch.zeros_like(position_ids))
        x = inputs_embeds + type0
        x = x + self.position_embeddings(position_ids)
        return self.LayerNorm(x)


class _Roberta(nn.Module):
    def __init__(self, layers, hidden, inter, heads, vocab, max_pos):
        super().__init__()
        self.embeddings = _Embeddings(vocab, hidden, max_pos)
        self.encoder = _Encoder(layers, hidden, inter, heads)

    def forward(self, inputs_embeds, attention_mask, position_ids):
        h = self.embeddings(inputs_embeds, position_ids)
        dtype = h.dtype
        additive = (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        for layer in self.encoder.layer:
            h = layer(h, additive)
        return h


class ZettHypernet(nn.Module):
    """``cfg``: the config.json fields of a ZeTT hypernetwork (hn_n_layers, hn_hidden_size, ...)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        H, I = cfg["hn_hidden_size"], cfg["hn_intermediate_size"]
        E = cfg["n_embd"]
        heads = cfg.get("hn_num_attention_heads") or H // 64
        self.separate = bool(cfg.get("separate_out_embeddings", False))
        self.single_head = bool(cfg.get("hn_single_head", False))
        n_in = 2 * E if self.separate else E
        self.n_embd = E
        if cfg.get("hn_embed_lang_id"):
            self.lang_embeddings = nn.Embedding(cfg["n_langs"], H)
        self.model = _Roberta(cfg["hn_n_layers"], H, I, heads, cfg["pad_token_id"] + 1,
                              ROBERTA_MAX_POSITIONS)
        self.fallback_embeddings = nn.Embedding(max(cfg["hn_n_extra_tokens"], 1), n_in)
        self.input_projection = nn.Sequential(nn.Linear(n_in, H), ProjectorBlock(H, H, I))
        self.output_projection = nn.Sequential(ProjectorBlock(H, H, I),
                                               nn.Linear(H, n_in if self.single_head else E))
        if self.separate and not self.single_head:
            self.output_projection_out = nn.Sequential(ProjectorBlock(H, H, I), nn.Linear(H, E))
        if cfg.get("hn_rescale_embeddings"):
            self.in_scaler = Rescaler(n_in)
            self.scaler = Rescaler(E)
            if self.separate:
                self.out_scaler = Rescaler(E)
        if cfg.get("hn_predict_bias", True):
            self.bias_projection = nn.Linear(H, 1)

    def forward(self, surface_forms, source_embeddings, lang_index=None):
        cfg = self.cfg
        dev = surface_forms.device
        V0 = cfg["original_vocab_size"]
        use_fallback = surface_forms >= V0
        main_ids = torch.clamp(surface_forms, max=V0 - 1)
        fallback_ids = torch.clamp(surface_forms - V0, min=0)
        src = F.embedding(main_ids, source_embeddings)
        if cfg.get("hn_rescale_embeddings"):
            src = self.in_scaler(src)
        x = torch.where(use_fallback[..., None], self.fallback_embeddings(fallback_ids), src)
        x = self.input_projection(x)
        mask = surface_forms != cfg["pad_token_id"]
        if cfg.get("hn_embed_lang_id"):
            L = mask.shape[1]
            lang = self.lang_embeddings(torch.tensor(lang_index, device=dev))
            emb = self.model.embeddings
            lang = lang - (emb.token_type_embeddings(torch.tensor(0, device=dev)) +
                           emb.position_embeddings(torch.tensor(L, device=dev)))
            lang = lang[None, None, :].expand(x.shape[0], -1, -1)
            x = torch.cat([x, lang], dim=1)
            mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=torch.bool, device=dev)],
                             dim=1)
        position_ids = torch.arange(mask.shape[1], device=dev)[None, :].expand(mask.shape)
        h = self.model(x, mask, position_ids)[:, 0]
        y = self.output_projection(h)
        if self.single_head:
            e_in = y[..., :self.n_embd]
            e_out = y[..., self.n_embd:] if self.separate else None
        else:
            e_in = y
            e_out = self.output_projection_out(h) if self.separate else None
        if cfg.get("hn_rescale_embeddings"):
            e_in = self.scaler(e_in)
            if e_out is not None:
                e_out = self.out_scaler(e_out)
        if cfg.get("hn_predict_bias", True):
            bias = self.bias_projection(h)[..., 0]
        else:
            bias = torch.zeros(surface_forms.shape[0], dtype=h.dtype, device=dev)
        return e_in, e_out, bias


