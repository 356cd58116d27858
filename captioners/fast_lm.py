"""A fast greedy generator for the Qwen2 language model inside Qwen2-VL / Qwen2.5-VL, on the model's weights.

Where ``model.generate`` loses time on a GPU, and what this does instead:

* Prefill: HF pads the batch to its longest prompt and builds dense masks; here prompts are PACKED (no padding
  tokens at all) into one ``[tokens, hidden]`` matrix, so every projection is one large matrix product, and
  causal attention runs per group of equal-length prompts as one flash-attention call on a view. q/k/v and
  gate/up projections are fused into single matrix products (the model's own parameters are re-pointed at
  views of the fused tensors, so no weight is stored twice). Long batches are prefilled in chunks of about
  ``prefill_tokens`` tokens to bound activation memory. Only the last token of each prompt reaches ``lm_head``.
* Decode: one step for the whole batch runs against a static KV cache ``[batch, kv_heads, max_len, dim]`` and
  is captured ONCE as a CUDA graph, so a step costs one graph launch instead of ~1,000 kernel launches from
  Python; the GPU then runs bound by weight reads, as decode should. No host sync per step (finished
  sequences are checked every ``check_every`` steps).
* Sampling is greedy with the repetition penalty of transformers' ``RepetitionPenaltyLogitsProcessor``
  (applied to every token already in the sequence, prompt included), so tokens equal ``generate``'s.

Positions follow Qwen's multimodal RoPE: text advances by one, vision tokens take (time, row, column)
indices, and text after a vision block starts after the largest index used (as Qwen's and vLLM's code do).
transformers 5.x starts it at the block's start + max(rows, columns) instead; the two differ only when a
video's temporal index outgrows its spatial grid (long clips sampled sparsely: > ~13 s at 8 frames, 448x448).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from captioners.fast_ops import Ops, aligned, fuse, pad_columns
from captioners.fast_vision import Segments, make_segments, segment_attention
from captioners.tokens import cut_at_eos

log = logging.getLogger(__name__)


@dataclass(kw_only=True, slots=True)
class Prompt:
    """One packed prompt: token ids (vision placeholders already expanded), 3-axis positions, and where its
    vision embeddings go."""

    ids: torch.Tensor  # [L] long
    positions: torch.Tensor  # [3, L] long: temporal, height, width rope indices
    vision_mask: torch.Tensor  # [L] bool: placeholder tokens to replace by vision embeddings (in order)
    next_position: int  # rope position of the first generated token


def language_model(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder stack of a transformers Qwen-VL model (layout of transformers 5.x and 4.5x)."""
    inner = model.model
    return getattr(inner, "language_model", inner)


@dataclass(slots=True)
class _Layer:
    ln1: torch.Tensor
    ln2: torch.Tensor
    wqkv: torch.Tensor
    bqkv: torch.Tensor | None
    wo: torch.Tensor
    wgu: torch.Tensor
    wd: torch.Tensor


class FastLM:
    def __init__(self, model: torch.nn.Module, prefill_tokens: int = 32768, cuda_graphs: bool = True,
                 check_every: int = 8, ops: Ops | None = None):
        lm = language_model(model)
        cfg = lm.config
        self.hidden = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or self.hidden // self.heads
        self.eps = cfg.rms_norm_eps
        self.embed = lm.embed_tokens.weight
        self.final_norm = lm.norm.weight
        self.lm_head = model.lm_head.weight
        rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
        self.mrope_section = list(rope.get("mrope_section", [16, 24, 24]))
        self.inv_freq = lm.rotary_emb.inv_freq.float().to(self.embed.device)  # transformers may leave it on CPU
        self.rope_scaling = float(getattr(lm.rotary_emb, "attention_scaling", 1.0))
        self.layers: list[_Layer] = []
        for layer in lm.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append(_Layer(
                ln1=layer.input_layernorm.weight, ln2=layer.post_attention_layernorm.weight,
                wqkv=fuse([a.q_proj, a.k_proj, a.v_proj], "weight"), bqkv=fuse([a.q_proj, a.k_proj, a.v_proj], "bias"),
                wo=a.o_proj.weight, wgu=fuse([m.gate_proj, m.up_proj], "weight", aligned(m.gate_proj.out_features)),
                wd=pad_columns(m.down_proj, aligned(m.gate_proj.out_features))))
        self.prefill_tokens = prefill_tokens
        self.cuda_graphs = cuda_graphs
        self.check_every = check_every
        self.ops = ops or Ops()
        self._decoders: dict[tuple[int, int], _Decoder] = {}  # (batch, max_len) -> cache + captured graph
        self.keep_decoders = 2  # e.g. a small first chunk and full chunks, without re-capturing each time

    @property
    def device(self) -> torch.device:
        return self.embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.dtype

    # ----------------------------------------------------------------------------------------------------
    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin ``[T, head_dim]`` in the model dtype for 3-axis ``positions [3, T]``."""
        freqs = positions[..., None].float() * self.inv_freq.to(positions.device)  # [3, T, d/2]
        freqs = torch.cat([c[i % 3] for i, c in enumerate(freqs.split(self.mrope_section, dim=-1))], dim=-1)
        emb = torch.cat([freqs, freqs], dim=-1)
        return (emb.cos() * self.rope_scaling).to(self.dtype), (emb.sin() * self.rope_scaling).to(self.dtype)

    def _layer(self, layer: _Layer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, segs: Segments,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoder layer on packed tokens ``x [T, D]``; returns x and this layer's k, v ``[T, Hkv, d]``."""
        n, d = x.shape[0], self.head_dim
        ops = self.ops
        qkv = F.linear(ops.rms_norm(x, layer.ln1, self.eps), layer.wqkv, layer.bqkv)
        q, k, v = qkv.split([self.heads * d, self.kv_heads * d, self.kv_heads * d], dim=-1)
        q, k, v = q.view(n, self.heads, d), k.view(n, self.kv_heads, d), v.view(n, self.kv_heads, d)
        q, k = ops.rope(q, cos, sin), ops.rope(k, cos, sin)
        attn = segment_attention(q, k, v, segs, causal=True)
        x = x + F.linear(attn.reshape(n, -1), layer.wo)
        x = x + F.linear(ops.silu_mul(F.linear(ops.rms_norm(x, layer.ln2, self.eps), layer.wgu)), layer.wd)
        return x, k, v

    @torch.inference_mode()
    def prefill(self, prompts: list[Prompt], vision: list[torch.Tensor | None],
                cache: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None,
                slots: list[int] | None = None) -> torch.Tensor:
        """Run packed prompts; return last-token logits ``[len(prompts), vocab]`` (float32).

        ``vision[i]`` holds prompt i's vision embeddings (one row per True in its ``vision_mask``). With
        ``cache`` (per-layer k and v ``[slots, Hkv, max_len, d]``), prompt i's keys/values go to ``slots[i]``.
        """
        order = sorted(range(len(prompts)), key=lambda i: prompts[i].ids.numel())
        logits = torch.empty(len(prompts), self.lm_head.shape[0], device=self.device, dtype=torch.float32)
        chunk: list[int] = []
        total = 0
        for i in order + [None]:
            if i is not None and (not chunk or total + prompts[i].ids.numel() <= self.prefill_tokens):
                chunk.append(i)
                total += prompts[i].ids.numel()
                continue
            self._prefill_chunk(chunk, prompts, vision, logits, cache, slots)
            chunk, total = ([i], prompts[i].ids.numel()) if i is not None else ([], 0)
        return logits

    def _prefill_chunk(self, chunk: list[int], prompts: list[Prompt], vision: list[torch.Tensor | None],
                       logits: torch.Tensor, cache, slots) -> None:
        dev = self.device
        ids = torch.cat([prompts[i].ids for i in chunk]).to(dev)
        x = F.embedding(ids, self.embed)
        mask = torch.cat([prompts[i].vision_mask for i in chunk]).to(dev)
        feats = [vision[i] for i in chunk if vision[i] is not None]
        if feats:
            x[mask] = torch.cat(feats).to(x.dtype)
        cos, sin = self.rope(torch.cat([prompts[i].positions for i in chunk], dim=1).to(dev))
        cos, sin = cos[:, None], sin[:, None]
        lengths = [prompts[i].ids.numel() for i in chunk]
        segs = make_segments(lengths, dev)
        ends = torch.tensor(lengths, device=dev).cumsum(0) - 1
        group_slots: dict[int, torch.Tensor] = {}
        if cache is not None:  # cache slots of each length group, in packed order
            for n in {*lengths}:
                group_slots[n] = torch.tensor([slots[i] for i, m in zip(chunk, lengths) if m == n], device=dev)
        for li, layer in enumerate(self.layers):
            x, k, v = self._layer(layer, x, cos, sin, segs)
            if cache is not None:
                for n, start, count, index in segs.groups:  # one copy per group of equal-length prompts
                    rows = index if index is not None else torch.arange(start, start + n * count, device=dev)
                    rows = rows.reshape(count, n)
                    cache[0][li][group_slots[n], :, :n] = k[rows].transpose(1, 2)
                    cache[1][li][group_slots[n], :, :n] = v[rows].transpose(1, 2)
        last = self.ops.rms_norm(x[ends], self.final_norm, self.eps)
        logits[torch.tensor(chunk, device=dev)] = F.linear(last, self.lm_head).float()

    # ----------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: list[Prompt], vision: list[torch.Tensor | None], max_new_tokens: int,
                 eos_ids: list[int], pad_id: int, repetition_penalty: float = 1.0) -> list[list[int]]:
        """Greedy tokens for each prompt, stopping after an eos id (included) or ``max_new_tokens``."""
        if not prompts:
            return []
        batch = _bucket(len(prompts))
        max_len = aligned(max(p.ids.numel() for p in prompts) + max_new_tokens, 256)
        dec = self._decoders.pop((batch, max_len), None)
        if dec is None:
            while len(self._decoders) >= self.keep_decoders:  # free the oldest cache before allocating
                self._decoders.pop(next(iter(self._decoders)))
            dec = _Decoder(self, batch, max_len)
        self._decoders[(batch, max_len)] = dec  # most recently used last
        dec.reset(len(prompts), eos_ids, pad_id, repetition_penalty)
        for i, p in enumerate(prompts):
            dec.seen[i, p.ids.to(self.device)] = True
        logits = self.prefill(prompts, vision, cache=(dec.k, dec.v), slots=list(range(len(prompts))))
        n = len(prompts)
        dec.start(logits, torch.tensor([p.ids.numel() for p in prompts]), torch.tensor([p.next_position for p in prompts]))
        out = [dec.token[:n].clone()]
        for step in range(1, max_new_tokens):
            if step % self.check_every == 0 and bool(dec.finished[:n].all()):
                break
            dec.step()
            out.append(dec.token[:n].clone())
        return [cut_at_eos(row, eos_ids) for row in torch.stack(out, dim=1).tolist()]


def _bucket(n: int) -> int:
    """Batch sizes used for decode graphs: powers of two from 8, so few graphs serve any batch."""
    b = 8
    while b < n:
        b *= 2
    return b


class _Decoder:
    """Static buffers for one (batch, max_len) and the decode step, captured as a CUDA graph on GPU."""

    def __init__(self, lm: FastLM, batch: int, max_len: int):
        self.lm, self.batch, self.max_len = lm, batch, max_len
        dev, dt = lm.device, lm.dtype
        shape = (batch, lm.kv_heads, max_len, lm.head_dim)
        self.k = [torch.zeros(shape, device=dev, dtype=dt) for _ in lm.layers]
        self.v = [torch.zeros(shape, device=dev, dtype=dt) for _ in lm.layers]
        self.token = torch.zeros(batch, dtype=torch.long, device=dev)
        self.position = torch.zeros(batch, dtype=torch.long, device=dev)  # rope index of ``token``
        self.length = torch.zeros(batch, dtype=torch.long, device=dev)  # cache slot ``token`` is written to
        self.finished = torch.ones(batch, dtype=torch.bool, device=dev)
        self.seen = torch.zeros(batch, lm.lm_head.shape[0], dtype=torch.bool, device=dev)
        self.rows = torch.arange(batch, device=dev)
        self.slots = torch.arange(max_len, device=dev)
        self.eos = torch.zeros(0, dtype=torch.long, device=dev)
        self.pad = torch.zeros((), dtype=torch.long, device=dev)
        self.penalty = torch.ones((), dtype=torch.float32, device=dev)
        self.true = torch.ones((), dtype=torch.bool, device=dev)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.capture_failed = False

    def reset(self, n: int, eos_ids: list[int], pad_id: int, penalty: float) -> None:
        self.seen.zero_()
        self.finished.fill_(True)
        self.finished[:n] = False
        self.length.zero_()
        self.position.zero_()
        self.token.fill_(pad_id)
        eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=self.lm.device)
        if self.graph is not None and eos.numel() != self.eos.numel():
            self.graph = None  # the graph baked in the eos tensor's shape
        if self.eos.numel() == eos.numel():
            self.eos.copy_(eos)
        else:
            self.eos = eos
        self.pad.fill_(pad_id)
        self.penalty.fill_(penalty)

    def _choose(self, logits: torch.Tensor) -> torch.Tensor:
        """Repetition penalty on every seen token, then argmax; finished rows emit pad."""
        penalised = torch.where(logits < 0, logits * self.penalty, logits / self.penalty)
        logits = torch.where(self.seen, penalised, logits)
        nxt = torch.where(self.finished, self.pad, logits.argmax(dim=-1))
        self.seen.index_put_((self.rows, nxt), self.true)  # a device scalar: a Python True would copy from CPU
        self.finished |= torch.isin(nxt, self.eos)
        return nxt

    def start(self, logits: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor) -> None:
        n = logits.shape[0]
        full = torch.full((self.batch, logits.shape[1]), 0.0, device=logits.device)
        full[:n] = logits
        self.length[:n] = lengths.to(self.length.device)
        self.position[:n] = positions.to(self.position.device)
        self.token.copy_(self._choose(full))

    def _step(self) -> None:
        lm = self.lm
        b, d = self.batch, lm.head_dim
        x = F.embedding(self.token, lm.embed)  # [B, D]
        cos, sin = lm.rope(self.position[None].expand(3, -1))
        cos, sin = cos[:, None], sin[:, None]
        valid = (self.slots[None] <= self.length[:, None])[:, None, None]  # [B, 1, 1, max_len]
        group = lm.heads // lm.kv_heads
        ops = lm.ops
        for li, layer in enumerate(lm.layers):
            qkv = F.linear(ops.rms_norm(x, layer.ln1, lm.eps), layer.wqkv, layer.bqkv)
            q, k, v = qkv.split([lm.heads * d, lm.kv_heads * d, lm.kv_heads * d], dim=-1)
            q, k, v = q.view(b, lm.heads, d), k.view(b, lm.kv_heads, d), v.view(b, lm.kv_heads, d)
            q, k = ops.rope(q, cos, sin), ops.rope(k, cos, sin)
            self.k[li][self.rows, :, self.length] = k
            self.v[li][self.rows, :, self.length] = v
            # the query heads sharing a kv head become that head's "query rows": K and V are read once
            attn = F.scaled_dot_product_attention(q.view(b, lm.kv_heads, group, d), self.k[li], self.v[li],
                                                  attn_mask=valid)
            x = x + F.linear(attn.reshape(b, -1), layer.wo)
            x = x + F.linear(ops.silu_mul(F.linear(ops.rms_norm(x, layer.ln2, lm.eps), layer.wgu)), layer.wd)
        logits = F.linear(ops.rms_norm(x, lm.final_norm, lm.eps), lm.lm_head).float()
        self.length += 1
        self.position += 1
        self.token.copy_(self._choose(logits))

    def step(self) -> None:
        if not (self.lm.cuda_graphs and self.token.is_cuda):
            self._step()
            return
        if self.graph is None and not self.capture_failed:
            self._capture()
        if self.graph is None:
            self._step()
        else:
            self.graph.replay()

    def _capture(self) -> None:
        """Capture ``_step`` (buffers saved and restored around the warm-up runs that capture needs)."""
        saved = [t.clone() for t in (self.token, self.position, self.length, self.finished, self.seen)]
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._step()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._step()
            self.graph = graph
        except RuntimeError as exc:  # capture is an optimisation: fall back to eager steps
            log.warning("CUDA graph capture of the decode step failed (%s); decoding eagerly", exc)
            self.graph, self.capture_failed = None, True
        for buf, old in zip((self.token, self.position, self.length, self.finished, self.seen), saved):
            buf.copy_(old)
