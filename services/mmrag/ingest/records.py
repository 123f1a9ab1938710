"""What a reader yields: one :class:`DecodedItem` per page / image / clip, or a :class:`DecodeError`.

Readers never raise for bad input: a file (or one page or clip of it) that cannot be read becomes a
``DecodeError`` whose ``reason`` says what is wrong and what to do, so one broken page never hides
the rest of a document and the pipeline can store the reason next to the rows that did load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from PIL import Image

Modality = Literal["page", "image", "clip", "audio"]
TextSource = Literal["pdf", "ocr", "speech"]
ErrorCode = Literal[
    "empty",  # zero bytes
    "too_large",  # over a configured size or pixel limit
    "unsupported",  # not a PDF, image, video or audio file we can read
    "encrypted",  # needs a password
    "corrupt",  # the bytes cannot be parsed (truncated, damaged, wrong checksum)
    "damaged_page",  # one page of an otherwise readable PDF is lost
    "skipped",  # readable but not read because of a limit (ingest.max_pages)
    "unreadable",  # the file itself could not be opened (missing, permissions, a directory)
]


@dataclass(frozen=True, slots=True)
class DecodedItem:
    """One searchable unit decoded from a file: a PDF page, an image, a video clip, or a stretch of an audio file."""

    modality: Modality
    source: str
    """The path (or the name given by the caller) the item was read from."""
    index: int
    """0-based position within the source: page index, clip (or audio window) index, 0 for an image."""
    images: list[Image.Image]
    """RGB images: the rendered page, the image, the clip's sampled frames (in time order), or an audio item's
    drawn waveform."""
    thumbnail_png: bytes
    """PNG, longest side ``ingest.thumbnail_px``: the page, the image, or the clip's middle frame."""
    width: int
    height: int
    page: int | None = None
    """1-based page number (pages only), as a PDF viewer shows it."""
    start_s: float | None = None
    end_s: float | None = None
    frame_ts: list[float] | None = None
    """Presentation time in seconds of each frame in ``images`` (clips only), increasing."""
    text: str = ""
    text_source: TextSource | None = None
    """``pdf`` when ``text`` is the PDF text layer, ``ocr`` when it was recognised, ``speech`` when it was only
    transcribed, None when empty."""
    warnings: list[str] = field(default_factory=list)
    """Problems that did not stop the item from loading (damaged content, padding, skipped frames)."""
    context: str | None = None
    """Where the item sits in its document: the document's title and, for a PDF page, the headings of the sections
    around it (from the outline). The dense text channel embeds it with every window of the item's text."""

    @property
    def keyframe(self) -> Image.Image:
        """The image that represents the item: the page, the image, or the clip's middle frame."""
        return self.images[len(self.images) // 2]


@dataclass(frozen=True, slots=True)
class DecodeError:
    """A file, page or clip that could not be read, with a reason a person can act on."""

    source: str
    reason: str
    code: ErrorCode = "corrupt"
    """Stable machine-readable class of the problem."""
    page: int | None = None
    """1-based page number when one page failed; None when the whole file (or a clip) did."""
    start_s: float | None = None
    end_s: float | None = None
