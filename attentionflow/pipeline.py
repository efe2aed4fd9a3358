"""``AttentionFlowPipeline``: zero-shot video editing with cross-frame attention, P2P and MMI.

Components in, :class:`EditOutput` out; no files are written here (see :mod:`attentionflow.jobs`).
Data flow (docs/ARCHITECTURE.md): frames -> motion maps -> VAE latents -> inversion (direct, negative-prompt,
null-text or plain DDIM; see :mod:`attentionflow.inversion`) -> joint denoising of ``[source, edit_1..edit_k]``
under cross-frame attention + P2P + MMI -> decode.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from attentionflow.attention.base import AttentionController, AttentionState, ControllerChain, index_span
from attentionflow.attention.blend import LocalBlend, RegionBlend, region_blend_mask
from attentionflow.attention.p2p import P2PEdit
from attentionflow.attention.processors import (
    AttentionRuntime,
    attention_resolutions,
    attention_sites,
    install_attention,
)
from attentionflow.attention.store import AttentionStore
from attentionflow.attention.tokens import check_prompt_length, max_length, word_spans
from attentionflow.config import AttentionSettings, EditConfig, InversionSettings
from attentionflow.errors import InputError
from attentionflow.figures import figure_frames
from attentionflow.flow.motion import MotionResult, motion_maps_for_resolutions
from attentionflow.flow.regions import motion_for_edit
from attentionflow.inversion import (
    DirectTrajectory,
    LoopHooks,
    NullTextOptions,
    ddim_inversion,
    frame_chunks,
    guided_sampling,
    null_step_mask,
    null_text_inversion,
    skips_source_uncond,
    target_offsets,
    unconditional_schedule,
)
from attentionflow.io.video import check_video
from attentionflow.mmi.inject import InjectionSettings, MotionInjector
from attentionflow.models.factory import Components
from attentionflow.models.loading import load_components, select_device, select_dtype
from attentionflow.pipeline_output import AttentionMaps, EditOutput, Inversion
from attentionflow.plan import EditPlan
from attentionflow.resources import (
    EditMemory,
    ModelShape,
    auto_chunk,
    available_memory,
    edit_memory,
    frames_per_call,
    latent_rows,
    unet_activation_bytes,
    vae_activation_bytes,
)

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int, torch.Tensor], None]
"""``callback(stage, step, total, latents)`` after every step of ``inversion``, ``null-text`` and ``editing``
(``step`` counts from 1; ``latents`` is the stage's current latent batch). The one progress hook of the
pipeline, beside its progress-bar setting (:meth:`AttentionFlowPipeline.set_progress_bar_config`)."""


#: ``auto``: the most frames per VAE call.
AUTO_VAE_BATCH = 8


def frames_digest(frames: np.ndarray) -> str:
    """Content hash of a (F, H, W, 3) uint8 video (shape included)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(frames.shape).encode())
    h.update(np.ascontiguousarray(frames).data)
    return h.hexdigest()


def composite_region(videos: np.ndarray, region_mask: torch.Tensor, scale: int) -> np.ndarray:
    """Paste the decoded edits into the source branch's frames inside the edit region only.

    The latents outside the region are already the source's, but a VAE decoder normalises (GroupNorm) and attends
    over the whole frame, so a local latent change shifts colours everywhere. The region's latent mask, upsampled
    and feathered over about one latent pixel inside its edge, blends the frames: outside the region the edit's
    pixels are the source branch's exactly.

    Args:
        videos: ``(B, F, H, W, 3)`` uint8, the source branch first.
        region_mask: ``(F, 1, h, w)`` in {0, 1} (:func:`attentionflow.attention.blend.region_blend_mask`).
        scale: pixels per latent pixel.
    """
    b, f, h, w, _ = videos.shape
    hard = F.interpolate(region_mask.float().cpu(), size=(h, w), mode="nearest")  # (F, 1, H, W)
    k = scale + 1 if scale % 2 == 0 else scale  # odd feather window, about one latent pixel
    # erode by k // 2, then blur over k: the feather lies inside the region, so outside it alpha is exactly 0
    inner = 1.0 - F.max_pool2d(1.0 - hard, k, stride=1, padding=k // 2)
    alpha = F.avg_pool2d(inner, k, stride=1, padding=k // 2, count_include_pad=False)[:, 0, :h, :w]  # (F, H, W)
    a = alpha.numpy()[None, ..., None]  # (1, F, H, W, 1)
    src = videos[:1].astype(np.float32)  # (1, F, H, W, 3)
    mixed = src + a * (videos[1:].astype(np.float32) - src)  # (B-1, F, H, W, 3)
    return np.concatenate([videos[:1], np.clip(np.rint(mixed), 0, 255).astype(np.uint8)])


class AttentionFlowPipeline:
    """Zero-shot text-driven video editing (vid2vid-zero recipe) with Motion Map Injection.

    Example::

        pipe = AttentionFlowPipeline.from_pretrained("embedded")
        plan = pipe.plan("a red circle is moving on the road", ["a blue circle is moving on the road"],
                         mmi=MMIConfig(motion_words=["moving"]))
        out = pipe.edit(frames, plan)
    """

    def __init__(self, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any,
                 *, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 inversion_cache_size: int = 0) -> None:
        self.unet, self.vae, self.text_encoder = unet, vae, text_encoder
        self.inversion_cache_size = inversion_cache_size
        """How many recent inversions :meth:`edit` keeps and reuses (0: none). An inversion is reused
        only for the same frames, source prompt and inversion settings; the app and batch runs keep a few."""
        self._inversions: OrderedDict[tuple, Inversion] = OrderedDict()
        self.tokenizer, self.scheduler = tokenizer, scheduler
        self.device = torch.device(device) if device is not None else next(unet.parameters()).device
        self.dtype = dtype if dtype is not None else next(unet.parameters()).dtype
        for module in (unet, vae, text_encoder):
            if module.dtype != self.dtype or module.device != self.device:
                module.to(self.device, self.dtype)
            module.eval().requires_grad_(False)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.progress_bar = True
        """Show tqdm bars for inversion, null-text and editing (:meth:`set_progress_bar_config`)."""

    def set_progress_bar_config(self, disable: bool = False) -> None:
        """Turn the progress bars off (``disable=True``) or on, as in diffusers' pipelines."""
        self.progress_bar = not disable

    def clear_inversion_cache(self) -> None:
        """Forget every cached inversion (the app does this when another user's edit comes next)."""
        self._inversions.clear()

    @classmethod
    def from_components(cls, components: Components, **kwargs: Any) -> "AttentionFlowPipeline":
        """Build from a :class:`Components` bundle."""
        return cls(components.unet, components.vae, components.text_encoder, components.tokenizer,
                   components.scheduler, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str, *, device: str = "auto", mixed_precision: str = "no",
                        inversion_cache_size: int = 0) -> "AttentionFlowPipeline":
        """Load a local diffusers folder, a cached hub id, or ``"embedded"`` (the shipped toy model)."""
        dev = select_device(device)
        dtype = select_dtype(mixed_precision, dev)
        return cls.from_components(load_components(path, dev, dtype), device=dev, dtype=dtype,
                                   inversion_cache_size=inversion_cache_size)

    # ---------------------------------------------------------------------------------------------
    # building blocks

    def attention_resolutions(self, latent_size: tuple[int, int]) -> list[tuple[int, int]]:
        """(h, w) of every attention resolution of the UNet for ``latent_size``, finest first."""
        by_queries = attention_resolutions(attention_sites(self.unet), latent_size)
        return [by_queries[q] for q in sorted(by_queries, reverse=True)]

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text embeddings (P, L, D) of padded prompts."""
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        return self.text_encoder(ids)[0].to(self.dtype)

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray, batch_size: int = 8) -> torch.Tensor:
        """VAE latents (F, 4, H/s, W/s) of uint8 frames (F, H, W, 3), using the posterior mean; ``batch_size``
        frames per VAE call (only those are converted to floats at a time)."""
        chunks = []
        for start in range(0, len(frames), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(frames[start:start + batch_size])).to(self.device)
            x = x.permute(0, 3, 1, 2).to(self.dtype) / 127.5 - 1.0  # (n, 3, H, W) in [-1, 1]
            chunks.append(self.vae.encode(x).latent_dist.mean)
        return torch.cat(chunks) * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, batch_size: int = 8) -> np.ndarray:
        """uint8 frames (N, H, W, 3) from latents (N, 4, h, w); ``batch_size`` latents per VAE call (each call's
        images are turned into uint8 before the next one runs)."""
        out: np.ndarray | None = None
        for start in range(0, latents.shape[0], batch_size):
            chunk = latents[start:start + batch_size] / self.vae.config.scaling_factor
            images = self.vae.decode(chunk).sample  # (n, 3, H, W)
            images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            images = images.permute(0, 2, 3, 1).cpu().numpy()  # (n, H, W, 3)
            if out is None:
                out = np.empty((latents.shape[0], *images.shape[1:]), np.uint8)
            out[start:start + len(images)] = images
        assert out is not None, "decode_latents needs at least one latent"
        return out

    def _noise_fn(self):
        def fn(latents: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
            emb = (
                embeddings.expand(latents.shape[0], *embeddings.shape[1:]) if embeddings.shape[0] == 1 else embeddings
            )
            return self.unet(latents, t, encoder_hidden_states=emb).sample

        return fn

    def free_memory(self) -> int | None:
        """Bytes free on the pipeline's device (CUDA: ``torch.cuda.mem_get_info``; otherwise the host's available
        RAM, :func:`attentionflow.resources.available_memory`); None if unknown."""
        if self.device.type == "cuda":
            return int(torch.cuda.mem_get_info(self.device)[0])
        return available_memory()

    @property
    def dtype_bytes(self) -> int:
        """Bytes of one of the model's floats (4 in float32, 2 in half precision)."""
        return torch.finfo(self.dtype).bits // 8

    @property
    def shape(self) -> ModelShape:
        """What the memory estimate needs of this model (:func:`attentionflow.resources.edit_memory`)."""
        return ModelShape(unet_channels=tuple(self.unet.config.block_out_channels),
                          vae_channels=int(self.vae.config.block_out_channels[0]), vae_scale=self.vae_scale_factor,
                          parameters=sum(p.numel() for m in (self.unet, self.vae, self.text_encoder)
                                         for p in m.parameters()))

    def memory_estimate(self, num_frames: int, frame_size: tuple[int, int], num_branches: int, rows_per_frame: int,
                        chunk: int, vae_batch: int = AUTO_VAE_BATCH) -> EditMemory:
        """The peak memory of an edit of ``num_frames`` frames of ``frame_size`` ``(H, W)`` on this model and dtype
        (:func:`attentionflow.resources.edit_memory`, the figure that sizes ``auto`` chunks too)."""
        height, width = frame_size
        return edit_memory(num_frames, width, height, num_branches, self.shape, rows_per_frame=rows_per_frame,
                           chunk=chunk, dtype_bytes=self.dtype_bytes, vae_batch=vae_batch)

    def chunk_size(self, chunk_frames: int | str, num_frames: int, latent_size: tuple[int, int],
                   rows_per_frame: int) -> int:
        """Frames per model call for ``chunk_frames`` (:attr:`AttentionSettings.chunk_frames`).

        A number: that many (at most ``num_frames``). ``auto``: the most frames whose UNet activations
        (:func:`attentionflow.resources.unet_activation_bytes` x ``rows_per_frame`` latent rows per frame: branches x
        guidance halves) fit in :data:`attentionflow.resources.AUTO_CHUNK_MEMORY_SHARE` of :meth:`free_memory` (on CUDA
        ``torch.cuda.mem_get_info``); every frame when they fit, which is the unchunked computation exactly; every
        frame too when the free memory is unknown.
        """
        per_frame = rows_per_frame * unet_activation_bytes(self.unet.config.block_out_channels, latent_size,
                                                           self.dtype_bytes)
        free = self.free_memory() if chunk_frames == "auto" else None
        return frames_per_call(chunk_frames, num_frames, per_frame, free)

    def vae_batch(self, chunk_frames: int | str, chunk: int, frame_size: tuple[int, int]) -> int:
        """Frames per VAE call: the chunk when ``chunk_frames`` is a number; with ``auto``, at most
        :data:`AUTO_VAE_BATCH` (what every edit used before chunks existed, so short videos decode as they did), at
        most the chunk, and at most what fits in the same share of the free memory
        (:func:`attentionflow.resources.vae_activation_bytes` per frame)."""
        if chunk_frames != "auto":
            return chunk
        height, width = frame_size
        per_frame = vae_activation_bytes(self.vae.config.block_out_channels[0], width, height, self.dtype_bytes)
        return auto_chunk(self.free_memory(), per_frame, min(chunk, AUTO_VAE_BATCH))

    # ---------------------------------------------------------------------------------------------

    def _inversion_key(self, frames: np.ndarray, source_prompt: str, settings: InversionSettings,
                       attention: AttentionSettings) -> dict[str, Any]:
        """Everything an inversion depends on (the key under which it is cached and checked), by name."""
        shaping = dataclasses.asdict(attention)
        if not (settings.runs_null_text and not settings.null_normal_infer):
            shaping.pop("chunk_frames")  # per-frame attention: the chunks do not change the inversion
        return {"frames": frames_digest(frames), "source_prompt": source_prompt, **settings.shaping(),
                **shaping, "device": str(self.device), "dtype": str(self.dtype).replace("torch.", "")}

    def _check_frames(self, frames: np.ndarray) -> None:
        check_video(frames)
        height, width = frames.shape[1:3]
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise InputError(f"frame size {width}x{height} must be a multiple of {self.vae_scale_factor}")

    def invert(self, frames: np.ndarray, source_prompt: str, settings: InversionSettings | None = None,
               attention: AttentionSettings | None = None, *, seed: int = EditConfig.seed,
               callback: ProgressCallback | None = None) -> Inversion:
        """DDIM inversion of ``frames`` (F, H, W, 3) uint8, then what ``settings.inversion`` needs.

        The DDIM inversion is conditioned on ``source_prompt`` (or on the empty prompt with
        ``settings.inversion_prompt == "empty"``). ``direct`` keeps the whole trajectory; ``null-text`` optimises one
        unconditional embedding per step (when ``settings.runs_null_text``); ``negative-prompt`` and ``ddim`` keep
        ``x_T`` only. ``settings`` / ``attention``: None = the config defaults. The result can be passed to
        :meth:`edit` (``inversion=``) for any number of edits with the same settings.
        """
        settings = settings or InversionSettings.default()
        attention = attention or AttentionSettings.default()
        self._check_frames(frames)
        check_prompt_length(source_prompt, self.tokenizer)
        key = self._inversion_key(frames, source_prompt, settings, attention)
        num_inference_steps = settings.num_inference_steps
        num_frames, height, width = frames.shape[:3]
        torch.manual_seed(seed)
        latent_size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        sizes = self.attention_resolutions(latent_size)
        chunk = self.chunk_size(attention.chunk_frames, num_frames, latent_size, rows_per_frame=2)
        chunks = frame_chunks(num_frames, chunk)
        state = AttentionState(num_frames=num_frames, total_frames=num_frames, num_branches=1, cfg=False,
                               num_steps=num_inference_steps, frame_mode="per_frame", latent_size=latent_size,
                               resolutions={h * w: (h, w) for h, w in sizes})
        runtime = AttentionRuntime(state=state, controller=None)
        timings: dict[str, float] = {}

        def report(stage: str) -> Callable[[int, int, torch.Tensor], None] | None:
            if callback is None:
                return None
            return lambda i, n, latents: callback(stage, i + 1, n, latents)

        with install_attention(self.unet, runtime, use_sc=attention.use_sc_attn, use_st=attention.use_st_attn,
                               st_attn_idx=attention.st_attn_idx):
            start = time.perf_counter()
            latents = self.encode_frames(frames, self.vae_batch(attention.chunk_frames, chunk,
                                                                (height, width)))  # (F, C, h, w)
            cond, uncond = self.encode_prompts([source_prompt, ""]).split(1)  # (1, L, D) each
            timings["encode"] = time.perf_counter() - start
            start = time.perf_counter()
            noise_fn = self._noise_fn()
            trajectory = ddim_inversion(latents, noise_fn, self.scheduler, num_inference_steps,
                                        cond if settings.inversion_prompt == "source" else uncond,
                                        LoopHooks(chunks=chunks, before=state.enter, progress=self.progress_bar,
                                                  callback=report("inversion")))
            timings["inversion"] = time.perf_counter() - start

            null_embeddings: list[torch.Tensor] | None = None
            if settings.runs_null_text:
                start = time.perf_counter()
                state.frame_mode = "per_frame" if settings.null_normal_infer else "cross_frame"
                null_embeddings = null_text_inversion(
                    trajectory, noise_fn, self.scheduler, cond, uncond, settings.guidance_scale,
                    NullTextOptions(inner_steps=settings.null_inner_steps, base_lr=settings.null_base_lr,
                                    use_steps=null_step_mask(num_inference_steps, settings.null_uncond_ratio)),
                    LoopHooks(chunks=chunks, before=state.enter, progress=self.progress_bar,
                              callback=report("null-text")))
                timings["null_text"] = time.perf_counter() - start
        return Inversion(x_t=trajectory[-1], null_embeddings=null_embeddings, settings=key, timings=timings,
                         method=settings.inversion, trajectory=trajectory if settings.inversion == "direct" else None)

    def plan(self, source_prompt: str, target_prompts: Sequence[str], settings: InversionSettings | None = None,
             attention: AttentionSettings | None = None, **sections: Any) -> EditPlan:
        """:meth:`EditPlan.from_prompts` with this pipeline's tokenizer (``p2p=``, ``mmi=``, ``seed=``, ...)."""
        return EditPlan.from_prompts(self.tokenizer, source_prompt, target_prompts, settings, attention, **sections)

    def edit(self, frames: np.ndarray, plan: EditPlan, inversion: Inversion | None = None, *,
             callback: ProgressCallback | None = None,
             motion: tuple[MotionResult | None, np.ndarray | None] | None = None) -> EditOutput:
        """Edit a video (F, H, W, 3) uint8 as ``plan`` says (made by :meth:`EditPlan.build` or :meth:`plan`).

        ``inversion``: a result of :meth:`invert` for these frames, source prompt and settings (checked), so
        that several edits share one inversion; without it the pipeline inverts (or reuses one it cached,
        see ``inversion_cache_size``). ``motion``: what :func:`attentionflow.flow.regions.motion_for_edit` returned
        for these frames and the plan's motion settings (None: computed here; jobs compute it before loading a model,
        so that a video without motion fails at once).
        """
        settings, attention, p2p, mmi = plan.settings, plan.attention, plan.p2p, plan.mmi
        source_prompt, target_prompts, seed = plan.source_prompt, list(plan.target_prompts), plan.seed
        num_inference_steps, guidance_scale = settings.num_inference_steps, settings.guidance_scale
        timings: dict[str, float] = {}
        # 1. Check the frames, and find a given or cached inversion
        self._check_frames(frames)
        num_frames, height, width = frames.shape[:3]
        if mmi.enabled and num_frames < 2:
            raise InputError("MMI needs at least 2 frames (optical flow between neighbours); "
                             "use more frames or --no-mmi")
        prompts = plan.prompts
        num_branches = len(prompts)
        if inversion is not None or self.inversion_cache_size > 0:  # hashing the frames is only needed then
            wanted = self._inversion_key(frames, source_prompt, settings, attention)
            if inversion is not None and inversion.settings != wanted:
                diff = [k for k in wanted if inversion.settings.get(k) != wanted[k]]
                raise InputError(f"the given inversion was made with other settings ({', '.join(diff)}: "
                                 f"{', '.join(repr(inversion.settings.get(k)) for k in diff)}; this edit: "
                                 f"{', '.join(repr(wanted[k]) for k in diff)}); make one with invert() and "
                                 f"the edit's own frames, source prompt and settings")
            key = tuple(wanted.items())
            if inversion is None and key in self._inversions:
                inversion = self._inversions[key]
                self._inversions.move_to_end(key)

        # 2. Motion maps: once per video, then once per attention resolution; the edit region's masks from them.
        latent_size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        sizes = self.attention_resolutions(latent_size)
        start = time.perf_counter()
        if motion is None:
            motion = motion_for_edit(frames, plan.motion, mmi=mmi.enabled, region=p2p.edit_region)
        motion_result, region = motion
        maps_by_size: dict[tuple[int, int], torch.Tensor] = {}
        if mmi.enabled and motion_result is not None:
            full = motion_result.maps_tensor(self.device)  # (F, H, W) float32
            maps_by_size = {k: v.to(self.dtype) for k, v in motion_maps_for_resolutions(full, sizes).items()}
        if motion_result is not None:
            timings["motion_maps"] = time.perf_counter() - start
        region_mask = None
        if region is not None:
            moving = torch.from_numpy(np.ascontiguousarray(region)).to(self.device)  # (F, H, W) bool
            region_mask = region_blend_mask(moving, latent_size, p2p.edit_region,
                                            p2p.region_dilation).to(self.dtype)  # (F, 1, h, w), once per edit

        # 3. Invert the source video (unless an inversion was given or cached)
        reused = inversion is not None
        if inversion is None:
            inversion = self.invert(frames, source_prompt, settings, attention, seed=seed, callback=callback)
            timings.update(inversion.timings)
            if self.inversion_cache_size > 0:
                self._inversions[tuple(inversion.settings.items())] = inversion
                while len(self._inversions) > self.inversion_cache_size:
                    self._inversions.popitem(last=False)

        # 4. Frame chunks and the attention processors
        torch.manual_seed(seed)
        skip = skips_source_uncond(settings.inversion, guidance_scale)
        rows_per_frame = latent_rows(num_branches, guidance_scale, skip)
        chunk = self.chunk_size(attention.chunk_frames, num_frames, latent_size, rows_per_frame)
        state = AttentionState(num_frames=num_frames, total_frames=num_frames, num_branches=num_branches,
                               cfg=guidance_scale > 1.0, num_steps=num_inference_steps, frame_mode="cross_frame",
                               latent_size=latent_size, resolutions={h * w: (h, w) for h, w in sizes})
        runtime = AttentionRuntime(state=state, controller=None)

        with install_attention(self.unet, runtime, use_sc=attention.use_sc_attn, use_st=attention.use_st_attn,
                               st_attn_idx=attention.st_attn_idx):
            # 5. Encode the prompts; the unconditional embedding of every step
            start = time.perf_counter()
            embeddings = self.encode_prompts([*prompts, ""])  # (B + 1, L, D)
            cond, uncond = embeddings[:-1], embeddings[-1:]
            timings["encode"] = timings.get("encode", 0.0) + time.perf_counter() - start  # + the inversion's

            unconds = unconditional_schedule(settings.inversion, num_inference_steps, uncond, cond[:1],
                                             inversion.null_embeddings, settings.null_uncond_ratio)
            # 6. Direct inversion: each target prompt's offsets, from the plain model
            offsets = None
            if settings.direct_targets and inversion.trajectory is not None and num_branches > 1:
                start = time.perf_counter()  # no controller is on yet: the offsets come from the plain model
                offsets = target_offsets(inversion.trajectory, self._noise_fn(), self.scheduler,
                                         num_inference_steps, cond[1:], unconds, guidance_scale,
                                         LoopHooks(chunks=frame_chunks(num_frames, chunk), before=state.enter,
                                                   progress=self.progress_bar))
                timings["direct_offsets"] = time.perf_counter() - start

            # 7. The controllers, then the denoising loop under them
            start = time.perf_counter()
            controller, stores, injector, p2p_ctrl = self._controllers(plan, maps_by_size, sizes, num_frames,
                                                                       region_mask)
            runtime.controller = controller
            controller.reset()
            direct = None if inversion.trajectory is None else DirectTrajectory(inversion.trajectory, offsets, skip)
            final = guided_sampling(
                inversion.x_t, self._noise_fn(), self.scheduler, num_inference_steps, cond, unconds, guidance_scale,
                direct, LoopHooks(chunks=frame_chunks(num_frames, chunk), before=state.enter,
                                  after=lambda latents: controller.step_end(latents, state),
                                  progress=self.progress_bar,
                                  callback=None if callback is None
                                  else lambda i, n, latents: callback("editing", i + 1, n, latents)))
            runtime.controller = None
            timings["editing"] = time.perf_counter() - start

        # 8. Decode (and paste the region's edit into the source outside it)
        start = time.perf_counter()
        vae_batch = self.vae_batch(attention.chunk_frames, chunk, (height, width))
        videos = self.decode_latents(final, vae_batch).reshape(num_branches, num_frames, height, width, 3)
        if region_mask is not None:
            videos = composite_region(videos, region_mask, self.vae_scale_factor)
        timings["decode"] = time.perf_counter() - start

        # 9. The attention maps and the output
        maps = self._attention_maps(plan, stores, maps_by_size, num_frames)
        motion_words = list(plan.motion_words)
        ranking: list[tuple[str, float]] = []
        if injector is not None and plan.candidates is not None:
            ranking = list(injector.ranking)
            motion_words = [injector.chosen_word] if injector.chosen_word else []
        return EditOutput(source_prompt=source_prompt, target_prompts=list(target_prompts),
                          reconstruction=videos[0], edits=list(videos[1:]), motion=motion_result,
                          attention=maps, edit_modes=list(p2p_ctrl.modes), motion_words=motion_words,
                          motion_ranking=ranking, timings=timings, inversion_reused=reused,
                          inversion_method=inversion.method, inversion_carries=inversion.carries,
                          region=region, edit_region=p2p.edit_region, chunk_frames=chunk)

    __call__ = edit

    def _controllers(self, plan: EditPlan, maps_by_size: dict[tuple[int, int], torch.Tensor],
                     sizes: list[tuple[int, int]], num_frames: int, region_mask: torch.Tensor | None = None
                     ) -> tuple[AttentionController, dict[str, AttentionStore], MotionInjector | None, P2PEdit]:
        """The controller chain of one edit (store, MMI, P2P with its local blend, store, region blend), built from the
        checked plan. The stores keep the maps of :func:`figure_frames` of the ``num_frames`` and of the prompts' words
        only. ``region_mask``: ``(F, 1, h, w)`` of :func:`region_blend_mask` (None: edit everywhere)."""
        p2p, mmi = plan.p2p, plan.mmi
        tables = plan.p2p_tables
        blend = None if tables.blend_positions is None else \
            LocalBlend(tables.blend_positions, tables.num_tokens, threshold=p2p.blend_threshold)
        p2p_ctrl = P2PEdit(tables, local_blend=blend)
        size = sizes[min(plan.attention_map_level, len(sizes) - 1)]
        shown = figure_frames(num_frames)
        tokens = index_span(k for positions in plan.content_positions for k in positions)  # all the figure shows
        stores = {"without_mmi": AttentionStore(resolution=size, frames=shown, keep_step=False, tokens=tokens)}
        injector = None
        if not mmi.enabled:
            chain: list[AttentionController] = [p2p_ctrl, stores["without_mmi"]]
        else:
            motion_tokens = [list(t) for t in plan.motion_tokens] if plan.motion_tokens is not None else None
            injector = MotionInjector(
                motion_maps=maps_by_size, motion_tokens=motion_tokens,
                content_tokens=self._content_mask(plan),
                auto_candidates=list(plan.candidates) if plan.candidates is not None else None,
                settings=InjectionSettings(strength=mmi.strength, similarity=mmi.similarity, branches=mmi.branches,
                                           places=tuple(mmi.places), step_range=(mmi.step_start, mmi.step_end),
                                           auto_steps=mmi.auto_steps))
            stores["with_mmi"] = AttentionStore(resolution=size, frames=shown, keep_step=False, tokens=tokens)
            # MMI writes the raw maps and P2P edits them after it, as in the MMI reference; the figure's maps are the
            # raw ones (without) and the ones the model uses (with)
            chain = [stores["without_mmi"], injector, p2p_ctrl, stores["with_mmi"]]
        if region_mask is not None:
            chain.append(RegionBlend(region_mask))  # after the word blend: the two masks multiply (intersection)
        return ControllerChain(chain), stores, injector, p2p_ctrl

    def _content_mask(self, plan: EditPlan) -> torch.Tensor:
        """(B, L) bool: True at each prompt's own tokens."""
        mask = torch.zeros(len(plan.prompts), max_length(self.tokenizer), dtype=torch.bool)
        for b, positions in enumerate(plan.content_positions):
            mask[b, list(positions)] = True
        return mask

    def _attention_maps(self, plan: EditPlan, stores: dict[str, AttentionStore],
                        maps_by_size: dict[tuple[int, int], torch.Tensor], num_frames: int) -> AttentionMaps | None:
        store = stores["without_mmi"]
        size = store.resolution
        try:
            before = store.maps(size)
        except (KeyError, ValueError):
            return None
        after = stores["with_mmi"].maps(size) if plan.mmi.enabled else None
        words = [word_spans(p, self.tokenizer) for p in plan.prompts]
        frames = store.stored_frames
        motion = maps_by_size.get(size)
        return AttentionMaps(size=size, words=words, without_mmi=before, with_mmi=after,
                             motion=None if motion is None else motion[frames], frames=frames,
                             total_frames=num_frames)
