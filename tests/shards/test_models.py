"""The VAE and text encoders through the real load path, against the libraries' own forward passes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.models import UNTRAINED_MARKER, is_untrained
from engine.stage import StageError
from shards.text import TextEncoder
from shards.vae import LatentVAE


def _frames(n: int, h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _reference_latent(path: str, frames: np.ndarray) -> np.ndarray:
    """What diffusers itself gives: encode(x).latent_dist.mean * scaling_factor."""
    from diffusers import AutoencoderKL

    model = AutoencoderKL.from_pretrained(path).eval()
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        return (model.encode(x).latent_dist.mean * model.config.scaling_factor).numpy()


def test_tiny_models_are_marked_and_cached(tiny_models):
    from engine.tiny import resolve_name, tiny_path

    for key in ("vae", "text_encoder", "wan_vae"):
        assert is_untrained(tiny_models[key])
        assert json.loads((Path(tiny_models[key]) / UNTRAINED_MARKER).read_text())["untrained"] is True
    marker = Path(tiny_models["vae"]) / UNTRAINED_MARKER
    before = marker.stat().st_mtime_ns
    assert str(tiny_path("sd-vae", tiny_models["folder"])) == tiny_models["vae"]  # built once, reused
    assert marker.stat().st_mtime_ns == before
    assert resolve_name("stabilityai/sd-vae-ft-ema") == "stabilityai/sd-vae-ft-ema"
    with pytest.raises(ValueError, match="known"):
        tiny_path("no-such-model", tiny_models["folder"])


def test_image_vae_matches_diffusers_and_reports_geometry(tiny_models):
    vae = LatentVAE(tiny_models["vae"], device="cpu")
    assert (vae.kind, vae.spatial, vae.temporal, vae.channels) == ("image", 8, 1, 4)
    assert vae.latent_shape(20, 48, 80) == (20, 4, 6, 10)
    assert "multiple" in vae.check_shape(20, 60, 80) and vae.check_shape(20, 64, 80) is None
    frames = _frames(3, 48, 80, 0)
    mean, logvar = vae.encode_uint8(torch.from_numpy(frames))
    assert mean.dtype == torch.float16 and tuple(mean.shape) == (3, 4, 6, 10)
    ref = _reference_latent(tiny_models["vae"], frames)
    np.testing.assert_allclose(mean.float().numpy(), ref, rtol=1e-2, atol=1e-3)
    meta = vae.meta()
    assert meta["scaling_factor"] == pytest.approx(0.18215) and meta["shift_factor"] == 0.0
    assert meta["untrained"] is False


def test_encode_stream_batches_across_clips_like_one_at_a_time(tiny_models):
    vae = LatentVAE(tiny_models["vae"], device="cpu")
    clips = {i: _frames(4, 48 if i % 2 else 64, 64, i) for i in range(5)}  # two frame sizes interleaved

    def load(i):
        if i == 3:
            raise StageError("cannot read frames: broken")
        return clips[i], f"extra{i}"

    results = {r.item: r for r in vae.encode_stream(range(5), load, frames_per_batch=8, threads=2)}
    assert sorted(results) == [0, 1, 2, 3, 4]
    assert isinstance(results[3].error, StageError) and results[3].latent is None
    for i in (0, 1, 2, 4):
        r = results[i]
        assert r.error is None and r.extra == f"extra{i}"
        alone = vae.encode_uint8(torch.from_numpy(clips[i]))[0].numpy()
        assert r.latent.shape == alone.shape == (4, 4, clips[i].shape[1] // 8, 8)
        np.testing.assert_allclose(r.latent.astype(np.float32), alone.astype(np.float32), rtol=1e-2, atol=2e-3)


def test_wan_video_vae_normalises_per_channel(tiny_models):
    from diffusers import AutoencoderKLWan

    vae = LatentVAE(tiny_models["wan_vae"], device="cpu", keep_logvar=True)
    assert (vae.kind, vae.temporal, vae.spatial, vae.channels) == ("wan", 4, 8, 16)
    assert "1 + k*4" in vae.check_shape(8, 64, 64) and vae.check_shape(9, 64, 64) is None
    frames = _frames(9, 64, 64, 3)
    results = list(vae.encode_stream([0], lambda i: (frames, None), frames_per_batch=9, threads=1))
    latent, logvar = results[0].latent, results[0].logvar
    assert latent.shape == vae.latent_shape(9, 64, 64) == (3, 16, 8, 8) and logvar.shape == latent.shape
    model = AutoencoderKLWan.from_pretrained(tiny_models["wan_vae"]).eval()
    x = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1  # [1, 3, T, H, W]
    with torch.no_grad():
        mean = model.encode(x).latent_dist.mean[0]  # [C, T', h, w]
    m = torch.tensor(model.config.latents_mean).view(-1, 1, 1, 1)
    s = torch.tensor(model.config.latents_std).view(-1, 1, 1, 1)
    ref = ((mean - m) / s).permute(1, 0, 2, 3).numpy()
    np.testing.assert_allclose(latent.astype(np.float32), ref, rtol=1e-2, atol=2e-3)
    assert vae.meta()["latents_std"] == pytest.approx(list(model.config.latents_std))


def test_text_encoder_real_tokens_and_last_token_pooled(tiny_models):
    from transformers import AutoTokenizer, CLIPTextModel

    enc = TextEncoder(tiny_models["text_encoder"], device="cpu", max_tokens=16)
    captions = ["a red car drives down a street at night", "", "dog " * 40, "a red car drives down a street at night"]
    out = enc.encode(captions)
    tok = AutoTokenizer.from_pretrained(tiny_models["text_encoder"])
    model = CLIPTextModel.from_pretrained(tiny_models["text_encoder"]).eval()
    for caption, (seq, pooled) in zip(captions, out):
        ids = tok([caption], truncation=True, max_length=16, return_tensors="pt")["input_ids"]
        assert ids[0, 0] == tok.bos_token_id and ids[0, -1] == tok.eos_token_id
        with torch.no_grad():
            res = model(input_ids=ids)  # alone, unpadded
        assert seq.dtype == np.float16 and seq.shape == (ids.shape[1], 32) and seq.shape[0] <= 16
        np.testing.assert_allclose(seq.astype(np.float32), res.last_hidden_state[0].numpy(), rtol=1e-2, atol=2e-3)
        np.testing.assert_array_equal(pooled, seq[-1])
        np.testing.assert_allclose(pooled.astype(np.float32), res.pooler_output[0].numpy(), rtol=1e-2, atol=2e-3)
    assert out[1][0].shape[0] == 2  # the empty caption is BOS, EOS
    assert out[2][0].shape[0] == 16  # truncated to max_tokens, EOS kept (checked above)
    assert enc.meta()["dim"] == 32 and enc.meta()["max_tokens"] == 16
