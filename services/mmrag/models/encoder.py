"""The late-interaction encoder: ColPali-family models (colpali-engine) turned into per-token numpy arrays.

``ColPaliEncoder`` embeds page images and queries into one float32 ``[n_tokens, dim]`` array each, with padding
tokens removed, and :func:`maxsim` scores them exactly. torch and colpali-engine are imported only inside the
functions that need them, so this module imports on a machine without them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmrag.config import TINY_PREFIX, ModelsConfig
from mmrag.models.tiny import MANIFEST_NAME

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from PIL import Image

#: colpali-engine (model class, processor class) for each ``models.retriever.family``.
FAMILIES: dict[str, tuple[str, str]] = {
    "colqwen2": ("ColQwen2", "ColQwen2Processor"),
    "colqwen2_5": ("ColQwen2_5", "ColQwen2_5_Processor"),
}

#: Longest side / shortest side beyond which images are padded. Qwen2-VL's processor raises above 200, and its
#: resize rounds both sides to multiples of 28, so keep a margin.
MAX_ASPECT_RATIO = 150.0

#: Query-augmentation tokens colpali-engine appends to every query (``process_queries``' default suffix).
QUERY_AUGMENTATION_TOKENS = 10

#: Upper bound on query-tokens x doc-tokens similarities held at once by :func:`maxsim` (float32: 4 bytes each).
_MAXSIM_BLOCK = 1 << 24


class ModelNotAvailableError(FileNotFoundError):
    """A configured model checkpoint cannot be found; the message says how to get it."""


# ------------------------------------------------------------------------------------------------ scoring
def maxsim(query: np.ndarray, docs: Sequence[np.ndarray]) -> np.ndarray:
    """Exact late-interaction score of one query against each document.

    ``score[j] = sum_i max_t <query[i], docs[j][t]>`` over the document's real tokens only. Unlike
    colpali-engine's ``score_multi_vector``, documents are never zero-padded to a common length, so a query token
    whose best real match is negative keeps its negative score instead of matching a padding zero.

    ``query`` is ``[n_q, dim]``; each doc is ``[n_t, dim]`` with ``n_t >= 1``. Returns float32 ``[len(docs)]``.
    """
    q = np.asarray(query, dtype=np.float32)
    if q.ndim != 2:
        raise ValueError(f"query must be a 2-D [n_tokens, dim] array, got shape {q.shape}")
    scores = np.empty(len(docs), dtype=np.float32)
    if not len(docs):
        return scores
    mats = []
    for j, d in enumerate(docs):
        d = np.asarray(d, dtype=np.float32)
        if d.ndim != 2 or d.shape[1] != q.shape[1]:
            raise ValueError(f"document {j} must be a [n_tokens, {q.shape[1]}] array, got shape {d.shape}")
        if d.shape[0] == 0:
            raise ValueError(f"document {j} has no tokens; it cannot be scored (was it embedded correctly?)")
        mats.append(d)

    # Score blocks of documents with one matmul each: sims [n_q, tokens of the block], then a segmented max.
    budget = max(1, _MAXSIM_BLOCK // max(1, q.shape[0]))
    start = 0
    while start < len(mats):
        stop, tokens = start, 0
        while stop < len(mats) and (stop == start or tokens + mats[stop].shape[0] <= budget):
            tokens += mats[stop].shape[0]
            stop += 1
        block = mats[start:stop]
        sims = q @ np.concatenate(block).T
        offsets = np.cumsum([0] + [m.shape[0] for m in block[:-1]])
        best = np.maximum.reduceat(sims, offsets, axis=1) if q.shape[0] else np.zeros((0, len(block)), np.float32)
        scores[start:stop] = best.sum(axis=0, dtype=np.float64)
        start = stop
    return scores


# ------------------------------------------------------------------------------------------------ images
def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of ``image``: transparency is composited on white, 16-bit and float modes are rescaled to 8 bit.

    A plain ``convert("RGB")`` turns black text on a transparent background all black and 16-bit greyscale
    nearly all white (see FINDINGS), which would embed garbage without any error.
    """
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(image, dtype=np.float64)
        finite = arr[np.isfinite(arr)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        grey = np.nan_to_num((arr - lo) * scale).clip(0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def clamp_aspect_ratio(image: Image.Image, max_ratio: float = MAX_ASPECT_RATIO) -> Image.Image:
    """Pad ``image`` with white (centred) so that its long side is at most ``max_ratio`` times its short side.

    Padding keeps every pixel (a receipt or a banner stays readable) where cropping would lose content.
    """
    from PIL import Image

    w, h = image.size
    if min(w, h) > 0 and max(w, h) / min(w, h) <= max_ratio:
        return image
    if w >= h:
        new_w, new_h = w, max(h, math.ceil(w / max_ratio))
    else:
        new_w, new_h = max(w, math.ceil(h / max_ratio)), h
    canvas = Image.new(image.mode, (new_w, new_h), "white")
    canvas.paste(image, ((new_w - w) // 2, (new_h - h) // 2))
    return canvas


# ----------------------------------------------------------------------------------------------- loading
def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when a CUDA device is visible, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: Any, device: str) -> Any:
    """A ``torch.dtype`` from a config string; ``auto`` is bfloat16 on GPU and float32 on CPU.

    float32 on CPU because bf16 is emulated (slow) on CPUs without native support.
    """
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ValueError(f"unsupported dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


def resolve_model_ref(models_cfg: ModelsConfig, ref: str, *, role: str = "retriever") -> str:
    """Turn a model reference into what ``from_pretrained`` takes, checking that local checkpoints exist.

    ``tiny:<name>`` must have been built (``mmrag models build-tiny``); a local path must exist; anything else is
    a hub id and is returned unchanged.
    """
    resolved = models_cfg.resolve(ref)
    if ref.startswith(TINY_PREFIX):
        path = Path(resolved)
        if not (path / MANIFEST_NAME).is_file():
            raise ModelNotAvailableError(
                f"the tiny {role} checkpoint {ref!r} is not built: {path} has no {MANIFEST_NAME}. "
                f"Build it with `mmrag models build-tiny` (writes to models.tiny_dir = {models_cfg.tiny_dir}), "
                f"or point models.{role}.model at a real checkpoint"
            )
        return str(path)
    if resolved.startswith(("/", "~", ".")) and not Path(resolved).exists():
        raise ModelNotAvailableError(
            f"{role} model path {resolved} does not exist; fix models.{role}.model (a local directory, "
            "a Hugging Face model id, or tiny:<name>)"
        )
    return resolved


# ----------------------------------------------------------------------------------------------- encoder
def usable_attention(requested: str, device: str) -> str:
    """The attention implementation to load with: ``flash_attention_2`` needs a CUDA device and the ``flash_attn``
    package, which the ``gpu`` extra does not install (its wheels must match the CUDA torch exactly); without them
    the encoder falls back to PyTorch's ``sdpa`` kernels on CUDA and to ``eager`` on CPU (sdpa gives NaN for the
    padded rows of left-padded query batches on CPU), with a warning, instead of failing the deployment."""
    import importlib.util

    if requested != "flash_attention_2":
        return requested
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return requested
    fallback = "sdpa" if device.startswith("cuda") else "eager"
    why = "flash_attn is not installed" if device.startswith("cuda") else f"it needs CUDA, not {device}"
    log.warning("models.retriever.attn_implementation flash_attention_2 unusable (%s): using %s", why, fallback)
    return fallback


class ColPaliEncoder:
    """Embeds images and queries with a ColPali-family model into per-token float32 arrays.

    ``model`` and ``processor`` are a colpali-engine model (``ColQwen2``, ``ColQwen2_5``, ...) and its processor;
    tests may inject any pair with the same protocol (``process_images``, ``process_texts``, a forward returning
    ``[batch, seq, dim]``). Use :meth:`from_config` to load them from the config tree.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        device: str = "cpu",
        dtype: Any = None,
        *,
        batch_size: int = 4,
        max_aspect_ratio: float = MAX_ASPECT_RATIO,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval() if hasattr(model, "eval") else model
        self.processor = processor
        self.device = device
        if dtype is None:
            params = getattr(model, "parameters", None)
            first = next(iter(params()), None) if callable(params) else None
            dtype = first.dtype if first is not None else "float32"
        self.dtype = resolve_dtype(dtype, device)
        self.batch_size = batch_size
        self.max_aspect_ratio = max_aspect_ratio

    @classmethod
    def from_config(cls, models_cfg: ModelsConfig, *, batch_size: int = 4) -> ColPaliEncoder:
        """Load ``models_cfg.retriever`` with colpali-engine (``tiny:`` refs, local paths and hub ids alike)."""
        import colpali_engine.models as cm

        rc = models_cfg.retriever
        path = resolve_model_ref(models_cfg, rc.model, role="retriever")
        model_cls_name, proc_cls_name = FAMILIES[rc.family]
        model_cls, proc_cls = getattr(cm, model_cls_name), getattr(cm, proc_cls_name)
        device = resolve_device(rc.device)
        dtype = resolve_dtype(rc.dtype, device)
        try:
            model = model_cls.from_pretrained(
                path,
                revision=rc.revision,
                dtype=dtype,
                attn_implementation=usable_attention(rc.attn_implementation, device),
                device_map=device,
            )
            processor = proc_cls.from_pretrained(path, revision=rc.revision)
        except OSError as e:
            raise ModelNotAvailableError(
                f"cannot load retriever {rc.model!r} (family {rc.family}) from {path}: {e}. Check "
                "models.retriever.model/revision; with HF_HUB_OFFLINE=1 the model must already be in the HF cache"
            ) from e
        cap_image_pixels(processor, rc.max_image_pixels)
        return cls(model.eval(), processor, device=device, dtype=dtype, batch_size=batch_size)

    @property
    def dim(self) -> int:
        """Embedding size of each token vector."""
        return int(getattr(self.model, "dim", 128))

    def embed_images(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """One float32 ``[n_tokens, dim]`` array per image (all real tokens of the page prompt, no padding)."""
        out: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            chunk = [
                clamp_aspect_ratio(to_rgb(im), self.max_aspect_ratio) for im in images[start : start + self.batch_size]
            ]
            out.extend(self._forward(self.processor.process_images(chunk)))
        return out

    def embed_queries(self, queries: Sequence[str]) -> list[np.ndarray]:
        """One float32 ``[n_tokens, dim]`` array per query, padding removed.

        Queries get colpali-engine's prefix and augmentation suffix, exactly as ``process_queries`` adds them.
        """
        prefix = getattr(self.processor, "query_prefix", "")
        suffix = getattr(self.processor, "query_augmentation_token", "") * QUERY_AUGMENTATION_TOKENS
        out: list[np.ndarray] = []
        for start in range(0, len(queries), self.batch_size):
            texts = [prefix + q + suffix for q in queries[start : start + self.batch_size]]
            out.extend(self._forward(self.processor.process_texts(texts)))
        return out

    def _forward(self, batch: Any) -> list[np.ndarray]:
        import torch

        inputs = {}
        for key, value in dict(batch).items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.dtype)
            inputs[key] = value
        with torch.inference_mode():
            emb = self.model(**inputs)
            mask = inputs["attention_mask"].bool()
            # Left padding: each row's real tokens are where the attention mask is 1.
            return [emb[i][mask[i]].float().cpu().numpy() for i in range(emb.shape[0])]


def cap_image_pixels(processor: Any, max_pixels: int) -> None:
    """Lower the processor's per-image pixel budget to ``max_pixels`` (never raise it above the checkpoint's)."""
    size = getattr(getattr(processor, "image_processor", None), "size", None)
    if size is None or size.get("longest_edge") is None or max_pixels >= size.get("longest_edge"):
        return
    # size is a dict or transformers' SizeDict; both take item assignment, and the processor reads it per call.
    size["longest_edge"] = max(max_pixels, size.get("shortest_edge") or 0)


__all__ = [
    "FAMILIES",
    "MAX_ASPECT_RATIO",
    "ColPaliEncoder",
    "ModelNotAvailableError",
    "clamp_aspect_ratio",
    "maxsim",
    "resolve_device",
    "resolve_dtype",
    "resolve_model_ref",
    "to_rgb",
]
