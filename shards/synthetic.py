"""Tiny random-weight models of the real architectures, for tests and the offline demo.

Each builder makes the model from a real config class with small sizes, saves it with the library's own
``save_pretrained`` and writes ``engine.models.UNTRAINED_MARKER`` beside it, so it loads through exactly the
path real weights take and everything it produces is labelled untrained. Weights come from a fixed seed:
the same tiny model on every machine.

Pipelines name them ``tiny:<name>`` (e.g. ``vae: tiny:sd-vae``): ``engine.tiny`` builds them once into a cache
folder and returns their path. No network.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from engine.models import UNTRAINED_MARKER

log = logging.getLogger(__name__)

TINY_VERSION = 1  # bump when a tiny config changes, so cached folders are rebuilt
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# Words the tiny tokenizer learns its merges from: captions made of them tokenize into a few tokens each.
_CORPUS = ("a the of and in on at with to from video clip scene camera shot close wide slow fast moving static "
           "red green blue yellow white black bright dark street car road city night day sky tree water river sea "
           "person man woman child dog cat bird house room table window light sun cloud rain snow news text "
           "walks runs drives flies sits stands looks turns pans zooms over under through across near far").split()


def _marker(folder: Path, what: str) -> None:
    (folder / UNTRAINED_MARKER).write_text(json.dumps(
        {"untrained": True, "built_by": "shards.synthetic", "what": what,
         "note": "random weights of a real architecture; outputs mean nothing"}, indent=1))


def _seeded(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


def build_tiny_vae(folder: str | Path) -> Path:
    """An ``AutoencoderKL`` (the SD-VAE architecture) with 8x spatial downsampling, 4 latent channels."""
    from diffusers import AutoencoderKL

    folder = Path(folder)
    model = _seeded(lambda: AutoencoderKL(
        block_out_channels=(16, 16, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        sample_size=64, scaling_factor=0.18215))
    model.save_pretrained(folder)
    _marker(folder, "AutoencoderKL, SD-VAE layout, 8x spatial")
    return folder


def build_tiny_wan_vae(folder: str | Path) -> Path:
    """An ``AutoencoderKLWan``: 8x spatial, 4x temporal (causal first frame), 16 channels."""
    from diffusers import AutoencoderKLWan

    folder = Path(folder)
    model = _seeded(lambda: AutoencoderKLWan(base_dim=16, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                             temperal_downsample=[False, True, True]))
    model.save_pretrained(folder)
    _marker(folder, "AutoencoderKLWan, 8x spatial, 4x temporal")
    return folder


def build_tiny_clip_text(folder: str | Path, vocab_size: int = 512) -> Path:
    """A ``CLIPTextModel`` (hidden 32, 2 layers) and a byte-level BPE tokenizer built with ``tokenizers``
    that adds BOS/EOS like CLIP's."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

    folder = Path(folder)
    tok = Tokenizer(models.BPE(unk_token=EOS))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(_CORPUS)] * 4 + _CORPUS, trainer)
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A {EOS}",
                                                       special_tokens=[(BOS, bos), (EOS, eos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=EOS, unk_token=EOS,
                                   model_max_length=77)
    fast.save_pretrained(folder)
    config = CLIPTextConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, projection_dim=32,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                            bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)
    _seeded(lambda: CLIPTextModel(config)).save_pretrained(folder)
    _marker(folder, "CLIPTextModel hidden 32, 2 layers; byte-level BPE tokenizer of 512 tokens")
    return folder


def build_tiny_models(folder: str | Path) -> dict[str, str]:
    """Build (once) the tiny VAE and CLIP text encoder into ``folder``; returns the encode stage's keys."""
    from engine.tiny import tiny_path

    return {"vae": tiny_path("sd-vae", folder), "text_encoder": tiny_path("clip-text", folder)}
