"""The tests' side of the ZeTT hypernetwork in PyTorch: the module itself is bench/python/zett_module.py
(the spec's architecture with the released checkpoints' state_dict names; the tests load the weights
they saved with ``load_state_dict(strict=True)``), re-exported here as ZettHypernetReference; plus
random weights scaled like a trained network, and a by-hand safetensors writer (json + struct).
"""

import json
import math
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench",
                                "python"))
from zett_module import ROBERTA_MAX_POSITIONS  # noqa: E402,F401
from zett_module import ZettHypernet as ZettHypernetReference  # noqa: E402,F401


def random_state_dict(module, seed):
    """Weights scaled like a trained network: Linear weights sd 1/sqrt(fan_in), biases sd 0.02,
    LayerNorm weights 1 +- 0.1, embeddings sd 0.3 (fallback rows 0.02), rescalers ~1."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in module.state_dict().items():
        shape = tuple(p.shape)
        if name.endswith("LayerNorm.weight") or name.endswith(".ln.weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith("LayerNorm.bias") or name.endswith(".ln.bias"):
            t = 0.05 * torch.randn(shape, generator=g)
        elif name.endswith("scaler.w"):
            t = 1.0 + 0.25 * torch.randn(shape, generator=g)
        elif name.endswith("scaler.b"):
            t = 0.01 * torch.randn(shape, generator=g)
        elif name == "fallback_embeddings.weight":
            t = 0.02 * torch.randn(shape, generator=g)
        elif "embeddings" in name:
            t = 0.3 * torch.randn(shape, generator=g)
        elif name.endswith(".weight"):
            t = torch.randn(shape, generator=g) / math.sqrt(shape[1])
        else:
            t = 0.02 * torch.randn(shape, generator=g)
        sd[name] = t.to(torch.float32)
    return sd


_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
              torch.int64: "I64"}


def save_safetensors(path, tensors):
    """Writes a safetensors file by hand: 8-byte little-endian header length, the JSON header
    (padded to 8 bytes with spaces), the raw little-endian data."""
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        if t.dtype == torch.bfloat16:
            raw = t.view(torch.int16).numpy().tobytes()
        else:
            raw = t.numpy().tobytes()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def config_json(cfg):
    """A config.json text for the hypernetwork fields ``cfg`` (plus the downstream-model fields a
    released file carries)."""
    full = {"architectures": ["ZettHypernet"], "model_type": "zett_hypernetwork",
            "hidden_size": 4096, "max_position_embeddings": 32768,
            "hn_model_name_or_path": "roberta-base", "hn_model_type": "roberta",
            "hn_embed_using_source_embeddings": True, "hn_concat_last_hidden_state": False,
            "hn_embed_target_priors": False, "hn_add_inter_token_attention": False}
    full.update(cfg)
    return json.dumps(full, indent=2)
