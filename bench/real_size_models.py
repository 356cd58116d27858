"""Real-size random-weight models for the pipeline benchmark, saved as local folders the stages load as is.

Every model has the published architecture of the one ``pipelines/stiv.yaml`` names (config values copied
from the released config files; no download), random weights and ``engine.models.UNTRAINED_MARKER``, and is
saved in its library's own format, so the stages load it through their own code (``resolve_model``,
``from_pretrained``, open_clip's ``local-dir:``):

- ``caption`` / ``dsg_video``: Qwen2.5-VL-7B-Instruct (8.3 B parameters) with its processor;
- ``categorize``: Qwen2.5-1.5B-Instruct;
- ``clip_model`` + ``aesthetic_head``: open_clip ViT-L/14 (QuickGELU) and the LAION improved-aesthetic MLP;
- ``vae``: diffusers ``AutoencoderKL`` with stabilityai/sd-vae-ft-ema's config;
- ``text_encoder``: transformers ``CLIPTextModel`` with openai/clip-vit-large-patch14's text config.

Tokenizers have the real vocabulary sizes and the real special-token ids (Qwen2: 151,643 + 22 special tokens;
CLIP: 49,406 + BOS/EOS): a byte-level BPE trained here on English text for the first few thousand entries,
padded with tokens no text produces. Prompts therefore tokenize to a realistic length, and the embedding and
output layers are the real size. Models are initialised on ``--device`` in bf16 (seconds on a GPU).

  python bench/real_size_models.py OUT_DIR --device cuda     # prints {stage key: path} as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_caption import QWEN25_VL_7B  # noqa: E402
from bench.bench_encode import SD_VAE_CONFIG  # noqa: E402
from captioners.synthetic import CHATML_TEMPLATE, _corpus  # noqa: E402
from engine.models import UNTRAINED_MARKER  # noqa: E402

# Qwen2 tokenizer: 151,643 byte-level BPE entries, then these special tokens in this order (ids 151643..151664).
QWEN_BASE_VOCAB = 151643
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
                "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
# Qwen/Qwen2.5-1.5B-Instruct config.json (architecture only).
QWEN25_1_5B = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                   num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
                   hidden_act="silu", tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645,
                   rope_parameters={"rope_type": "default", "rope_theta": 1e6})
# openai/clip-vit-large-patch14 text_config; BOS/EOS are the last two of its 49,408 tokens.
CLIP_L_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu",
                   bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
ENGLISH = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
           "they you were her she there one all we their has been if more when will would who so no out up into do "
           "man woman person people child dog cat car street road city building house room window door table tree "
           "grass water river sea beach sky cloud sun light night day red green blue yellow white black brown grey "
           "camera shot scene video frame close wide slow fast moving static walks runs drives flies sits stands "
           "looks turns holds opens pans zooms tilts background foreground left right center top bottom small large")


def _bpe(base_vocab: int, train_size: int, lowercase: bool = False):
    """A byte-level BPE trained on English-like text, its vocabulary padded to ``base_vocab`` entries."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if lowercase:
        tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=train_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus() + [ENGLISH] * 8, trainer=trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for i in range(len(vocab), base_vocab):  # entries no merge reaches: generated, never produced from text
        vocab[f"\u0120w{i}"] = i
    return Tokenizer.from_str(json.dumps(spec))


def qwen_tokenizer():
    from transformers import PreTrainedTokenizerFast

    tok = _bpe(QWEN_BASE_VOCAB, 4000)
    tok.add_special_tokens(QWEN_SPECIAL)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=QWEN_SPECIAL[1:])
    fast.chat_template = CHATML_TEMPLATE
    assert fast.convert_tokens_to_ids("<|video_pad|>") == QWEN25_VL_7B["ids"]["video_token_id"]
    return fast


def clip_tokenizer():
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    bos, eos = "<|startoftext|>", "<|endoftext|>"
    tok = _bpe(CLIP_L_TEXT["bos_token_id"], 4000, lowercase=True)
    tok.add_special_tokens([bos, eos])
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A {eos}", special_tokens=[
        (bos, CLIP_L_TEXT["bos_token_id"]), (eos, CLIP_L_TEXT["eos_token_id"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=eos, unk_token=eos,
                                   model_max_length=77)


def _marker(folder: Path, what: str) -> None:
    (folder / UNTRAINED_MARKER).write_text(json.dumps(
        {"untrained": True, "built_by": "bench.real_size_models", "what": what,
         "note": "random weights of the real architecture: outputs mean nothing"}, indent=1))


def build_qwen25_vl_7b(folder: Path, device: str, dtype: torch.dtype) -> Path:
    import transformers as tf

    tok = qwen_tokenizer()
    spec = QWEN25_VL_7B
    cfg = tf.Qwen2_5_VLConfig(text_config={**spec["text"], "pad_token_id": tok.pad_token_id},
                              vision_config=spec["vision"], **spec["ids"])
    with torch.device(device):
        model = tf.Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=dtype)
    model.generation_config.do_sample = False
    model.generation_config.eos_token_id = [tok.eos_token_id, tok.pad_token_id]
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    pixels = dict(min_pixels=56 * 56, max_pixels=28 * 28 * 1280)  # the released preprocessor's bounds
    tf.Qwen2_5_VLProcessor(image_processor=tf.Qwen2VLImageProcessor(**pixels),
                           video_processor=tf.Qwen2VLVideoProcessor(**pixels, do_sample_frames=False),
                           tokenizer=tok, chat_template=CHATML_TEMPLATE).save_pretrained(folder)
    _marker(folder, "Qwen2.5-VL-7B-Instruct architecture")
    return folder


def build_qwen25_1_5b(folder: Path, device: str, dtype: torch.dtype) -> Path:
    import transformers as tf

    tok = qwen_tokenizer()
    with torch.device(device):
        model = tf.Qwen2ForCausalLM._from_config(tf.Qwen2Config(**QWEN25_1_5B, pad_token_id=tok.pad_token_id),
                                                 dtype=dtype)
    model.generation_config.do_sample = False
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    _marker(folder, "Qwen2.5-1.5B-Instruct architecture")
    return folder


def build_clip(folder: Path) -> tuple[Path, Path]:
    from filters.synthetic import real_arch_config, write_random_clip, write_tiny_head

    clip = write_random_clip(folder / "clip-vit-l-14", real_arch_config("ViT-L-14"))
    head = write_tiny_head(folder / "aesthetic" / "sac+logos+ava1-l14-linearMSE.pth", input_size=768)
    return clip, head


def build_sd_vae(folder: Path, device: str, dtype: torch.dtype) -> Path:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(**SD_VAE_CONFIG).save_pretrained(folder)
    _marker(folder, "AutoencoderKL with stabilityai/sd-vae-ft-ema's config")
    return folder


def build_clip_text(folder: Path, device: str, dtype: torch.dtype) -> Path:
    from transformers import CLIPTextConfig, CLIPTextModel

    clip_tokenizer().save_pretrained(folder)
    torch.manual_seed(0)
    CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT)).save_pretrained(folder)
    _marker(folder, "CLIPTextModel with openai/clip-vit-large-patch14's text config")
    return folder


def build_all(root: str | Path, device: str = "cpu", dtype: torch.dtype = torch.bfloat16) -> dict[str, str]:
    """Build every model once under ``root`` (a folder with ``models.json`` is reused); ``{key: path}``."""
    root = Path(root)
    record = root / "models.json"
    if record.exists():
        return json.loads(record.read_text())
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    clip, head = build_clip(root)
    paths = {
        "vlm": build_qwen25_vl_7b(root / "qwen2.5-vl-7b", device, dtype),
        "llm": build_qwen25_1_5b(root / "qwen2.5-1.5b", device, dtype),
        "clip_model": clip, "aesthetic_head": head,
        "vae": build_sd_vae(root / "sd-vae-ft-ema", device, dtype),
        "text_encoder": build_clip_text(root / "clip-vit-large-patch14-text", device, dtype),
    }
    out = {k: str(v) for k, v in paths.items()}
    record.write_text(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    begun = time.perf_counter()
    paths = build_all(args.out, args.device)
    print(json.dumps({**paths, "seconds": round(time.perf_counter() - begun, 1)}))


if __name__ == "__main__":
    main()
