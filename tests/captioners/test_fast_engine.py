"""The fast Qwen-VL engine against transformers, on tiny random-weight models: same patches, same vision
embeddings, and the same greedy tokens as ``model.generate`` (incl. repetition penalty, mixed clip sizes,
odd frame counts, text-only prompts), and the same yes/no probabilities as a plain forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from captioners.fast_qwen import FastQwenVL, Visual
from captioners.fast_vision import make_segments, patchify, segment_attention
from captioners.vlm import VLM, ClipFrames

PROMPT = "Describe this video."


def _load(path: str):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoProcessor.from_pretrained(path)


def _clips(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # 84x112 gives a 3x4 merged grid: ragged attention windows; 3 frames: odd count (last frame repeated)
    shapes = [(4, 84, 112), (3, 112, 56), (4, 84, 112), (2, 56, 56)]
    return [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in shapes]


def _hf_tokens(model, proc, text: str, frames: np.ndarray, new: int, penalty: float) -> list[int]:
    meta = {"fps": 2.0, "total_num_frames": len(frames), "frames_indices": list(range(len(frames)))}
    inputs = proc(text=[text], videos=[frames], video_metadata=[meta], do_resize=False, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=new, do_sample=False, repetition_penalty=penalty)
    row = out[0, inputs["input_ids"].shape[1]:].tolist()
    eos = proc.tokenizer.convert_tokens_to_ids("<|im_end|>")
    return row[: row.index(eos) + 1] if eos in row else row


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl"])
def test_fast_generate_equals_hf_generate(tiny_models: dict, family: str) -> None:
    model, proc = _load(tiny_models[family])
    text = proc.apply_chat_template([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}],
                                    add_generation_prompt=True, tokenize=False)
    clips = _clips()
    ref = [_hf_tokens(model, proc, text, f, 20, 1.05) for f in clips]
    fast = FastQwenVL(model, family)
    tok = proc.tokenizer
    ids = tok(text).input_ids
    got = fast.generate([ids] * len(clips), [Visual(frames=f, seconds_per_frame=0.5) for f in clips], 20,
                        [tok.convert_tokens_to_ids("<|im_end|>")], tok.pad_token_id, 1.05)
    assert got == ref
    assert len({tuple(r) for r in ref}) > 1  # different clips gave different captions: the test can fail
    # a text-only prompt in the same batch takes the plain 1-D RoPE path
    plain = tok(proc.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                         tokenize=False), return_tensors="pt")
    ref_text = model.generate(**plain, max_new_tokens=12, do_sample=False)[0, plain["input_ids"].shape[1]:].tolist()
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    ref_text = ref_text[: ref_text.index(eos) + 1] if eos in ref_text else ref_text
    mixed = fast.generate([plain["input_ids"][0].tolist(), ids], [None, Visual(frames=clips[0], seconds_per_frame=0.5)],
                          12, [eos], tok.pad_token_id)
    assert mixed[0] == ref_text


def test_patchify_and_vision_match_transformers(tiny_models: dict) -> None:
    model, proc = _load(tiny_models["qwen2_5_vl"])
    frames = _clips()[0]
    inputs = proc(text=["<|vision_start|><|video_pad|><|vision_end|>"], videos=[frames], do_resize=False,
                  video_metadata=[{"fps": 2.0, "total_num_frames": 4}], return_tensors="pt")
    pixels, grid = patchify(torch.from_numpy(frames), 14, 2, 2)
    assert grid == tuple(inputs["video_grid_thw"][0].tolist())
    torch.testing.assert_close(pixels, inputs["pixel_values_videos"], atol=1e-5, rtol=1e-5)
    fast = FastQwenVL(model, "qwen2_5_vl")
    ours = fast.vision([pixels], [grid])[0]
    with torch.no_grad():
        theirs = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output[0]
    torch.testing.assert_close(ours, theirs, atol=2e-3, rtol=1e-4)


def test_segment_attention_equals_per_segment_loop() -> None:
    torch.manual_seed(0)
    lengths = [4, 4, 0, 2, 4, 3, 3]  # equal lengths apart (ragged windows) and a zero-length window
    n = sum(lengths)
    q, k, v = torch.randn(n, 4, 8), torch.randn(n, 2, 8), torch.randn(n, 2, 8)
    out = segment_attention(q, k, v, make_segments(lengths, q.device), causal=True)
    start = 0
    for length in lengths:
        sl = slice(start, start + length)
        if length:
            ref = torch.nn.functional.scaled_dot_product_attention(
                q[sl].transpose(0, 1), k[sl].transpose(0, 1).repeat_interleave(2, 0),
                v[sl].transpose(0, 1).repeat_interleave(2, 0), is_causal=True).transpose(0, 1)
            torch.testing.assert_close(out[sl], ref)
        start += length


def test_yes_probability_fast_equals_hf(tiny_models: dict) -> None:
    fast = VLM(tiny_models["qwen2_5_vl"], engine="fast")
    hf = VLM(tiny_models["qwen2_5_vl"], engine="hf")
    assert fast.fast is not None and hf.fast is None
    rng = np.random.default_rng(3)
    size = fast.frame_size(160, 90, max_pixels=112 * 112)
    frames = [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(2)]
    questions = ["Is there a dog in this image? Answer yes or no.", "Is the sky blue? Answer yes or no.",
                 "Is there a car? Answer yes or no."]
    a, b = fast.yes_probability(frames, questions), hf.yes_probability(frames, questions)
    assert a.shape == (2, 3) and np.all((a >= 0) & (a <= 1))
    np.testing.assert_allclose(a, b, atol=1e-4)
    # the caption paths agree too, and say the model is untrained
    clips = [ClipFrames(frames=np.stack(frames * 2), seconds_per_frame=0.5)]
    cf, nf = fast.caption(clips, PROMPT, 10, 1.05)
    ch, nh = hf.caption(clips, PROMPT, 10, 1.05)
    assert cf == ch and nf == nh and cf[0].startswith("[untrained model] ")


def test_unaligned_mlp_widths_are_padded_exactly() -> None:
    """Widths that are not multiples of 64 (Qwen2.5-VL's vision MLP is 3,420) are zero-padded for fast GEMMs;
    tokens must not change."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    text = dict(vocab_size=300, hidden_size=64, intermediate_size=100, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, eos_token_id=3, initializer_range=0.5,
                rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4})
    vision = dict(depth=2, hidden_size=32, intermediate_size=60, out_hidden_size=64, num_heads=4, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1],
                  tokens_per_second=2, initializer_range=0.5)
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=5, video_token_id=6,
                           vision_start_token_id=7, vision_end_token_id=8)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    frames = np.random.default_rng(1).integers(0, 256, (4, 56, 84, 3), dtype=np.uint8)
    pixels, grid = patchify(torch.from_numpy(frames), 14, 2, 2)
    ids = [10, 11, 7, 6, 8, 12, 13, 14]
    n_vis = grid[0] * grid[1] * grid[2] // 4
    row = [t for tok in ids for t in ([tok] * n_vis if tok == 6 else [tok])]
    input_ids = torch.tensor([row])
    out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                         mm_token_type_ids=(input_ids == 6).int() * 2, pixel_values_videos=pixels,
                         video_grid_thw=torch.tensor([grid]), second_per_grid_ts=torch.tensor([1.0]),
                         max_new_tokens=16, do_sample=False, pad_token_id=0)[0, len(row):].tolist()
    ref = out[: out.index(3) + 1] if 3 in out else out
    fast = FastQwenVL(model, "qwen2_5_vl")
    assert fast.vision.fused[0]["wgu"].shape[0] == 2 * 64 and fast.lm.layers[0].wd.shape[1] == 128
    assert fast.generate([ids], [Visual(frames=frames, seconds_per_frame=0.5)], 16, [3], 0) == [ref]
