"""Tiny random-weight models of the real architectures, for tests and the offline demo.

``build_tiny_models(folder)`` writes, once, a tiny Qwen2.5-VL (the default captioner's architecture), a tiny
Qwen2-VL, a tiny Qwen3-VL and a tiny Qwen2 instruct LLM (the categorizer's architecture) into ``folder``, each
saved with ``save_pretrained`` next to a processor/tokenizer and the ``vde_untrained.json`` marker, and returns
their paths. Stages then load them through ``engine.models.resolve_model`` exactly like real weights; what
they write is labelled as made by an untrained model.

A pipeline may name them ``tiny:qwen2_5_vl`` (``tiny:qwen2_vl``, ``tiny:qwen3_vl``, ``tiny:llm``): stages resolve
such names with ``resolve_name``, building the model once under ``$VDE_TINY_MODELS`` (default
``~/.cache/vde/tiny-models``).

The tokenizer is a byte-level BPE trained here with the ``tokenizers`` library on the prompts the stages send
(so prompts tokenize to few tokens) and carries the Qwen special tokens and a ChatML chat template, so the
same prompt-building code runs for tiny and real models.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
# Qwen2-VL's chat template, reduced to what vde sends: system/user/assistant turns whose content is a string
# or a list of {"type": "video" | "image" | "text"} parts.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_VERSION = 1  # bump when the tiny configs change, so cached folders are rebuilt
KINDS = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl", "llm")


def _corpus() -> list[str]:
    from captioners import prompts

    words = ("a the of and in on with is are there this video frame camera person man woman dog cat car tree "
             "street room water sky building people walking running sitting standing moving slowly quickly static "
             "pan zoom tilt close-up wide shot scene light dark red green blue white black yes no object question")
    return [prompts.DENSE_CAPTION_PROMPT, prompts.categorize_prompt("a dog runs on a beach."),
            prompts.dsg_question_prompt(["A dog runs on a beach.", "The sky is blue."]),
            prompts.dsg_answer_prompt("dog"), words, " ".join(c.name for c in prompts.CATEGORIES)] * 3


def build_tokenizer(vocab_size: int = 480):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with the Qwen special tokens and a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIAL_TOKENS[1:])
    fast.chat_template = CHATML_TEMPLATE
    return fast


def _text_config(tok, **extra) -> dict:
    ids = tok.convert_tokens_to_ids
    return dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
                initializer_range=0.5,  # large random weights: distinct logits, so greedy tokens are stable
                **extra)


def _vision_ids(tok) -> dict:
    ids = tok.convert_tokens_to_ids
    return dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))


def _build_one(kind: str, target: Path, seed: int) -> None:
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    tok = build_tokenizer()
    mrope = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4}
    pixels = dict(min_pixels=28 * 28, max_pixels=112 * 112)
    if kind == "llm":
        cfg = tf.Qwen2Config(**_text_config(tok, rope_parameters={"rope_type": "default", "rope_theta": 1e4}),
                             tie_word_embeddings=True)
        model = tf.Qwen2ForCausalLM(cfg)
        processor = tok
    elif kind in ("qwen2_vl", "qwen2_5_vl"):
        if kind == "qwen2_vl":
            vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, patch_size=14, spatial_merge_size=2,
                          temporal_patch_size=2, initializer_range=0.5)
            cfg_cls, model_cls, proc_cls = tf.Qwen2VLConfig, tf.Qwen2VLForConditionalGeneration, tf.Qwen2VLProcessor
        else:
            vision = dict(depth=3, hidden_size=32, intermediate_size=64, out_hidden_size=64, num_heads=4,
                          patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                          fullatt_block_indexes=[1], tokens_per_second=2, initializer_range=0.5)
            cfg_cls, model_cls = tf.Qwen2_5_VLConfig, tf.Qwen2_5_VLForConditionalGeneration
            proc_cls = tf.Qwen2_5_VLProcessor
        cfg = cfg_cls(text_config=_text_config(tok, rope_parameters=mrope), vision_config=vision, **_vision_ids(tok))
        model = model_cls(cfg)
        processor = proc_cls(image_processor=tf.Qwen2VLImageProcessor(**pixels),
                             video_processor=tf.Qwen2VLVideoProcessor(**pixels, do_sample_frames=False),
                             tokenizer=tok, chat_template=CHATML_TEMPLATE)
    elif kind == "qwen3_vl":
        text = _text_config(tok, head_dim=16, rope_parameters={**mrope, "mrope_interleaved": True})
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=16,
                      spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                      deepstack_visual_indexes=[1], initializer_range=0.5)
        cfg = tf.Qwen3VLConfig(text_config=text, vision_config=vision, **_vision_ids(tok))
        model = tf.Qwen3VLForConditionalGeneration(cfg)
        px = dict(size={"shortest_edge": 32 * 32, "longest_edge": 128 * 128})
        processor = tf.Qwen3VLProcessor(image_processor=tf.Qwen2VLImageProcessor(**pixels),
                                        video_processor=tf.Qwen3VLVideoProcessor(**px, do_sample_frames=False),
                                        tokenizer=tok, chat_template=CHATML_TEMPLATE)
    else:
        raise ValueError(f"unknown tiny model kind '{kind}' (use one of {KINDS})")
    model.generation_config.do_sample = False
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
    # ``target`` is engine.tiny's fresh temporary folder; it renames it into the cache atomically.
    model.save_pretrained(target)
    processor.save_pretrained(target)
    from engine.models import UNTRAINED_MARKER

    (target / UNTRAINED_MARKER).write_text(json.dumps({"kind": kind, "seed": seed, "tiny_version": TINY_VERSION,
                                                       "note": "random weights: output is meaningless"}))


def build_tiny_models(folder: str | os.PathLike, kinds: tuple[str, ...] = KINDS) -> dict[str, str]:
    """Build (once) and save tiny random-weight models under ``folder``; return ``{kind: path}``.

    Kinds: ``qwen2_5_vl``, ``qwen2_vl``, ``qwen3_vl`` (video VLMs) and ``llm`` (a Qwen2 text LLM). The same
    builders and cache as the ``tiny:NAME`` names (engine/tiny.py): a model already there is reused.
    """
    from engine.tiny import tiny_path

    return {kind: tiny_path(kind, folder) for kind in kinds}


def _builder(kind: str):
    def build(folder: str | os.PathLike) -> Path:
        _build_one(kind, Path(folder), seed=0)
        return Path(folder)

    build.__name__ = f"build_{kind}"
    return build


# Builders for `tiny:NAME` names (registered in captioners/__init__.py, built by engine/tiny.py).
build_qwen2_5_vl, build_qwen2_vl, build_qwen3_vl, build_llm = (_builder(k) for k in KINDS)
