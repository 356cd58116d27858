"""Stop tokens, one definition for every generation path (the fast engine, ``generate``, the text LLM)."""

from __future__ import annotations

from collections.abc import Iterable


def stop_tokens(model, tokenizer) -> tuple[list[int], int]:
    """``(eos ids, pad id)`` from the model's generation config, else its tokenizer's (pad falls back to 0)."""
    gen = model.generation_config
    eos = gen.eos_token_id if gen.eos_token_id is not None else tokenizer.eos_token_id
    pad = gen.pad_token_id if gen.pad_token_id is not None else (tokenizer.pad_token_id or 0)
    return ([eos] if isinstance(eos, int) else list(eos or [])), pad


def cut_at_eos(row: list[int], eos_ids: Iterable[int], keep_eos: bool = True) -> list[int]:
    """``row`` up to its first eos token (kept or not); the whole row when it has none."""
    eos = set(eos_ids)
    end = next((j for j, t in enumerate(row) if t in eos), None)
    return row if end is None else row[: end + 1 if keep_eos else end]
