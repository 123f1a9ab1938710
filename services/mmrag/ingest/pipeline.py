"""``mmrag ingest`` as a Python API: files in, a searchable LanceDB store out, on Ray Data.

    plan (driver)      expand inputs, hash each file, detect its type by magic bytes, skip files
                       whose content is already stored, report unreadable inputs
    ReadStage          render pages / load images / sample clip frames (+ OCR), CPU tasks
    EmbedStage         ColPali-family encoder actors (GPU actors in the gpu profile)
    SpeechStage        Whisper over videos' and audio files' sound, words onto their clips (own actors)
    TextEmbedStage     the dense text model over each item's text (text layer, OCR, speech)
    write (driver)     append rows invisible, publish each document once all its rows arrived
    upkeep (driver)    refresh indexes, then compact and drop old versions (``store.writer.optimize_after_ingest``)

The same code runs on a laptop (local Ray) and a cluster (``RAY_ADDRESS``); the store URI must be
reachable from the driver. See :mod:`mmrag.store.lance_store` for why a kill at any point is safe. A run holds
the store's writer lease throughout (:mod:`mmrag.store.lease`): a second run on the same store is refused
before it writes anything, since each would delete the other's unpublished rows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mmrag.config import MmragConfig
from mmrag.ingest import readers, sources
from mmrag.ingest.speech import check_speech
from mmrag.runtime import init_ray
from mmrag.store import FinishedDocument, LanceStore
from mmrag.store import schema as S
from mmrag.store.lease import WriterLease

log = logging.getLogger(__name__)

MODALITY_KEYS = {"page": "pages", "image": "images", "clip": "clips", "audio": "audio"}

#: Largest block a stage emits. Each table ReadStage yields (one embed batch of rows, ~0.3 MB a page) then
#: becomes a block of its own, so embedding and writing start after a document's first pages instead of
#: after the whole document (Ray Data's 128 MiB default merged a document's output into one block).
STREAM_BLOCK_BYTES = 1 << 20
#: Item rows buffered by the driver before one LanceDB append (each append is a commit).
WRITE_ROWS = 64


@dataclass
class IngestSummary:
    """What one ingest run did. ``errors`` lists every file or page that could not be read."""

    files: int = 0
    pages: int = 0
    images: int = 0
    clips: int = 0
    audio: int = 0
    """Items of audio-only files (windows of ``ingest.clip_seconds``)."""
    skipped: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    documents: int = 0
    collection: str = ""
    store: str = ""
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Busy seconds per stage: ``plan``, ``write`` and ``index`` on the driver; ``read`` and ``embed`` summed
    over the stage's actors (so they can exceed ``seconds`` when actors run in parallel). Time spent waiting
    (actor start-up, model loading, back-pressure) is in none of them."""
    calibration: dict[str, Any] | None = None
    """The collection's new calibration when this run changed it enough to redo it (see mmrag.calibration), or
    ``{"error": ...}`` if calibrating failed (the ingested documents are kept either way)."""
    optimize: dict[str, Any] | None = None
    """What the store upkeep after the run did (:meth:`LanceStore.optimize`), or ``{"error": ...}``; None when it
    was off or the run wrote nothing."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _DocProgress:
    source_uri: str
    content_hash: str
    kind: str
    items: int = 0
    errors: int = 0
    expected: tuple[int, int] | None = None  # (items, errors) from the "end" row

    def done(self) -> bool:
        return self.expected is not None and (self.items, self.errors) == self.expected


ProgressFn = Callable[[dict[str, int]], None]
#: tasks, config -> the stream of stage output tables (read, embedded, text-embedded rows)
BatchRunner = Callable[[list[dict[str, Any]], MmragConfig], Iterable[pa.Table]]
#: embeds a table of items (``kind``, ``text``, ``context``) with the dense text model, appending its columns
#: (:class:`mmrag.ingest.stages.TextEmbedStage`)
TextEmbedder = Callable[[pa.Table], pa.Table]
#: the dense text columns a runner may leave out when they come after publishing
_DEFERRED_TEXT = frozenset({"text_vectors", S.TEXT_VECTOR, "text_model_id"})
_TOKEN_COPIES = frozenset({S.TOKENS_I8, S.TOKEN_SCALES})
#: while another writer holds the store: called with its message, returns the seconds to wait before trying again
LeaseWait = Callable[[str], float]
#: items text-embedded per merge into the store when text vectors come after publishing
TEXT_FILL_ROWS = 256


def plan(
    inputs: list[str],
    cfg: MmragConfig,
    store: LanceStore,
    collection: str,
    names: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, dict[str, str]]:
    """Decide what to read: (tasks, errors, skipped). Errors name files by the path the user gave.

    ``names`` maps a file's URI to the document's identity when they differ (an upload staged in a temporary
    folder is the document ``upload:<its file name>``): the task then reads ``path`` and stores ``source_uri``."""
    files, problems = sources.expand(inputs, follow_symlinks=cfg.ingest.follow_symlinks)
    names = names or {}
    errors = [{"path": names.get(p.uri, p.uri), "reason": p.reason} for p in problems]
    tasks: list[dict[str, Any]] = []
    shown: dict[str, str] = {}
    current = store.current_hashes(collection, [names.get(f.uri, f.uri) for f in files])
    skipped = 0
    for f in files:
        if f.uri in names:
            f = sources.SourceFile(uri=f.uri, size=f.size, given=names[f.uri])
        if f.size == 0:
            errors.append({"path": f.shown, "reason": "empty file (0 bytes)"})
            continue
        if f.size > cfg.ingest.max_file_bytes:
            errors.append(
                {
                    "path": f.shown,
                    "reason": f"file is {f.size} bytes, over ingest.max_file_bytes ({cfg.ingest.max_file_bytes}); "
                    "raise the limit to ingest it",
                }
            )
            continue
        try:
            digest, head = sources.sha256_and_head(f.uri)
        except OSError as e:
            errors.append({"path": f.shown, "reason": f"cannot read file: {e}"})
            continue
        identity = names.get(f.uri, f.uri)
        if current.get(identity) == digest:
            skipped += 1
            continue
        kind = readers.detect_kind(head)
        if kind is None:
            errors.append({"path": f.shown, "reason": readers.describe_unknown(head)})
            continue
        tasks.append(
            {"collection": collection, "source_uri": identity, "path": f.uri, "content_hash": digest, "doc_kind": kind}
        )
        shown[identity] = f.shown
    return tasks, errors, skipped, shown


def _check_ocr(cfg: MmragConfig) -> None:
    """Fail before any work when OCR is on but misconfigured (bad language, missing language data)."""
    if cfg.ingest.ocr == "never":
        return
    from PIL import Image

    from mmrag.ingest.readers import OcrError, ocr_image

    try:
        ocr_image(Image.new("RGB", (64, 32), "white"), cfg.ingest.ocr_lang, timeout_s=60)
    except OcrError as e:
        raise ValueError(str(e)) from e


def ingest(
    inputs: list[str],
    cfg: MmragConfig,
    *,
    collection: str | None = None,
    store: LanceStore | None = None,
    progress: ProgressFn | None = None,
    calibrate: bool = True,
    runner: BatchRunner | None = None,
    names: dict[str, str] | None = None,
    optimize: bool | None = None,
    text_after_publish: TextEmbedder | None = None,
    lease_wait: LeaseWait | None = None,
) -> IngestSummary:
    """Ingest files, directories, globs or object-store URIs into the configured store, then re-calibrate the
    collection's search if it changed materially (``calibrate=False`` skips that; ``mmrag calibrate`` does it).

    ``runner``/``names``: see :func:`_ingest` and :func:`plan` (the ingestion service passes its warm stages and
    the uploads' names); ``optimize`` overrides ``store.writer.optimize_after_ingest``.

    ``text_after_publish``: the runner's tables come without dense text vectors; documents are published with
    those columns empty (searchable at once by keywords and the visual channel) and this embedder fills them in
    right after (:func:`fill_text_vectors`), so a small upload is searchable before its slowest stage ran.

    ``lease_wait``: read and embed everything *before* taking the store's writer lease, and hold it only to write
    and publish (and, with ``text_after_publish``, again to merge the text vectors, embedded without it): several
    ingestion replicas then embed at once and take turns only to write. While another writer holds the store this
    calls ``lease_wait(message)`` and tries again every ``lease_wait.every_s``. The embedded rows wait in memory,
    so this is for uploads (bounded by the upload limits), not for folders of thousands of files.

    Raises :class:`mmrag.store.lease.LeaseHeldError` (a ValueError) without writing anything when another writer
    holds the store (never with ``lease_wait``)."""
    t_start = time.perf_counter()
    collection = collection or cfg.store.default_collection
    S.validate_collection(collection)
    store = store or LanceStore.from_config(cfg.store)
    summary = IngestSummary(collection=collection, store=store.uri)
    if optimize is None:
        optimize = cfg.store.writer.optimize_after_ingest
    lease = WriterLease.from_config(store, cfg.store.writer, purpose=f"ingest into {collection}")
    try:
        if lease_wait is None:
            lease.acquire()
        wrote = _ingest(
            inputs, cfg, collection, store, summary, lease, progress,
            runner=runner, names=names, text_after_publish=text_after_publish, lease_wait=lease_wait,
        )  # fmt: skip
        if wrote and optimize:
            t0 = time.perf_counter()
            with _taken(lease, lease_wait):
                summary.optimize = _optimize(store, cfg, lease)
            summary.stage_seconds["optimize"] = time.perf_counter() - t0
    finally:
        lease.release()
    if calibrate and summary.documents:
        t0 = time.perf_counter()
        summary.calibration = _calibrate(cfg, collection)
        summary.stage_seconds["calibrate"] = time.perf_counter() - t0
    summary.seconds = time.perf_counter() - t_start
    return summary


def _ingest(
    inputs: list[str],
    cfg: MmragConfig,
    collection: str,
    store: LanceStore,
    summary: IngestSummary,
    lease: WriterLease,
    progress: ProgressFn | None,
    *,
    runner: BatchRunner | None = None,
    names: dict[str, str] | None = None,
    text_after_publish: TextEmbedder | None = None,
    lease_wait: LeaseWait | None = None,
) -> bool:
    """The run itself, under the writer lease (taken by the caller, or here only to write when ``lease_wait`` is
    given); fills ``summary`` and returns whether it wrote anything.

    ``runner`` turns the planned tasks into the stream of stage output tables: Ray Data's actor pools by default,
    or warm in-process stages (:class:`mmrag.ingest.warm.WarmStages`) for the ingestion service."""
    run_id = uuid.uuid4().hex[:12]
    dim = cfg.models.retriever.dim
    text_dim = cfg.models.text.dim if cfg.models.text is not None else None
    if lease_wait is None:
        store.ensure_tables(dim, text_dim)

    if cfg.models.uses_tiny():
        from mmrag.models.tiny import build_tiny

        build_tiny(cfg.models.tiny_dir)

    _check_ocr(cfg)
    t_plan = time.perf_counter()
    tasks, plan_errors, skipped, shown = plan(inputs, cfg, store, collection, names)
    check_speech(cfg.ingest.speech, [t["doc_kind"] for t in tasks])
    stage_s = {
        "plan": time.perf_counter() - t_plan,
        "read": 0.0,
        "embed": 0.0,
        "text_embed": 0.0,
        "write": 0.0,
        "index": 0.0,
    }
    batches: Iterable[pa.Table] = (runner or _ray_data_batches)(tasks, cfg) if tasks else ()
    if lease_wait is not None and (tasks or plan_errors):
        batches = list(batches)  # read and embed everything first: the lease is then held only to write
        _take(lease, lease_wait)
        store.ensure_tables(dim, text_dim)
    summary.skipped = skipped
    summary.errors.extend(plan_errors)
    if plan_errors:
        store.add_errors(
            [{"collection": collection, "source_uri": e["path"], "reason": e["reason"]} for e in plan_errors], run_id
        )
    counts = {
        "files": 0, "files_total": len(tasks), "pages": 0, "images": 0, "clips": 0, "audio": 0,
        "errors": len(plan_errors),
    }  # fmt: skip
    if progress:
        progress(counts)
    if not tasks:
        summary.stage_seconds = stage_s
        return bool(plan_errors)

    docs = {t["source_uri"]: _DocProgress(t["source_uri"], t["content_hash"], t["doc_kind"]) for t in tasks}
    store.begin_documents(collection, [(d.source_uri, d.content_hash) for d in docs.values()])
    _drop_unrecorded_versions(store, collection, list(docs.values()))
    buffered: list[pa.Table] = []
    published: list[str] = []
    fts_checked = False

    def flush() -> None:
        if buffered:
            lease.ensure_held()
            store.add_items(pa.concat_tables(buffered))
            buffered.clear()

    for batch in batches:
        t0 = time.perf_counter()
        stage_s["read"] += float(pc.sum(batch["read_s"]).as_py() or 0)
        items = batch.filter(pc.equal(batch["kind"], "item"))
        if items.num_rows:
            got = len(items["pooled"][0])
            if got != dim:
                raise ValueError(
                    f"the encoder {cfg.models.retriever.model} outputs {got}-dimensional vectors but "
                    f"models.retriever.dim is {dim}; set models.retriever.dim: {got}"
                )
            buffered.append(_to_items_table(items, cfg, dim, text_dim))
            stage_s["embed"] += float(pc.sum(items["embed_s"]).as_py() or 0)
            if text_dim and "text_embed_s" in items.column_names:
                stage_s["text_embed"] += float(pc.sum(items["text_embed_s"]).as_py() or 0)
        finished: list[_DocProgress] = []
        for row in batch.select(
            ["kind", "source_uri", "modality", "page", "reason", "n_items", "n_errors"]
        ).to_pylist():
            doc = docs[row["source_uri"]]
            if row["kind"] == "item":
                doc.items += 1
                counts[MODALITY_KEYS[row["modality"]]] += 1
            elif row["kind"] == "error":
                doc.errors += 1
                counts["errors"] += 1
                err = {"path": doc.source_uri, "reason": row["reason"]}
                if row["page"] is not None:
                    err["page"] = row["page"]
                summary.errors.append({**err, "path": shown.get(doc.source_uri, doc.source_uri)})
                _store_errors(store, collection, doc, [err], run_id)
            else:
                doc.expected = (row["n_items"], row["n_errors"])
            if doc.done():
                finished.append(doc)
        # a document is published only after all of its rows are written
        if finished or sum(t.num_rows for t in buffered) >= WRITE_ROWS:
            flush()
        if finished:
            lease.ensure_held()  # a writer that lost its lease publishes nothing more
            if not fts_checked:  # a new store's first documents must not be visible before BM25 can search them
                store.ensure_text_index()
                fts_checked = True
            store.finish_documents([_finished(collection, d, cfg) for d in finished])
            published.extend(S.doc_id(collection, d.source_uri) for d in finished if d.items)
            stage_s.setdefault("first_publish", time.perf_counter() - t_plan)
            for d in finished:
                counts["files"] += 1
                summary.documents += 1 if d.items else 0
        stage_s["write"] += time.perf_counter() - t0
        if progress:
            progress(counts)
    buffered.clear()  # rows of documents that never finished would stay invisible: not worth writing

    never_done = [d for d in docs.values() if not d.done()]
    for d in never_done:
        err = {"path": d.source_uri, "reason": "the reader crashed on this file (see the Ray logs); nothing was stored"}
        summary.errors.append({**err, "path": shown.get(d.source_uri, d.source_uri)})
        _store_errors(store, collection, d, [err], run_id)
    t0 = time.perf_counter()
    store.refresh_text_index()
    store.refresh_scalar_indexes()  # the text vectors' merge below joins on ``id``
    store.refresh_vector_index(cfg.store.text_ann_min_rows)
    stage_s["index"] = time.perf_counter() - t0
    if text_after_publish is not None and text_dim and published:
        t0 = time.perf_counter()
        if lease_wait is not None:
            lease.release()  # embedded without it, merged under it again
        fill_text_vectors(
            store, text_after_publish, collection=collection, doc_ids=published, lease=lease, lease_wait=lease_wait
        )
        with _taken(lease, lease_wait):
            store.refresh_vector_index(cfg.store.text_ann_min_rows)
        stage_s["text_embed"] += time.perf_counter() - t0
    summary.files = counts["files"]
    summary.pages, summary.images, summary.clips = counts["pages"], counts["images"], counts["clips"]
    summary.audio = counts["audio"]
    summary.stage_seconds = stage_s
    return True


def fill_text_vectors(
    store: LanceStore,
    embed: TextEmbedder,
    *,
    collection: str | None = None,
    doc_ids: list[str] | None = None,
    lease: WriterLease | None = None,
    lease_wait: LeaseWait | None = None,
) -> int:
    """Dense text vectors for published items that have none yet (of ``doc_ids`` in ``collection``, or all):
    embedded with ``embed`` and merged into their rows (every other column kept). Returns the items written.

    Used right after a publish that deferred them, and when the ingestion service starts, for documents whose
    job stopped between publishing and this step (they were searchable meanwhile by keywords and pictures).

    With ``lease_wait`` (and ``lease`` not held) every vector is computed first and ``lease`` taken only to merge
    them; otherwise the caller holds ``lease`` (if any) throughout."""
    todo = store.items_without_text_vectors(collection, doc_ids)
    parts = (
        embed(part.append_column("kind", pa.array(["item"] * part.num_rows)))
        for part in (todo.slice(s, TEXT_FILL_ROWS) for s in range(0, todo.num_rows, TEXT_FILL_ROWS))
    )
    if lease_wait is not None:
        parts = iter(list(parts))  # type: ignore[assignment]
    done = 0
    with _taken(lease, lease_wait) if lease is not None else contextlib.nullcontext():
        for out in parts:
            if lease is not None:
                lease.ensure_held()
            done += store.set_text_vectors(out)
    return done


def _take(lease: WriterLease, wait: LeaseWait) -> None:
    """Take ``lease``, calling ``wait`` (which says how long to sleep) while another writer holds the store."""
    from mmrag.store.lease import LeaseHeldError

    while True:
        try:
            lease.acquire()
            return
        except LeaseHeldError as e:
            time.sleep(wait(str(e)))


@contextlib.contextmanager
def _taken(lease: WriterLease, wait: LeaseWait | None) -> Iterator[None]:
    """``lease`` held for the block: taken (waiting) and given back when ``wait`` is set, else the caller's."""
    if wait is None:
        yield
        return
    _take(lease, wait)
    try:
        yield
    finally:
        lease.release()


def _ray_data_batches(tasks: list[dict[str, Any]], cfg: MmragConfig) -> Iterator[pa.Table]:
    """Read, embed and text-embed ``tasks`` on Ray Data (actor pools per stage); the stream of output tables."""
    import ray

    from mmrag.ingest.speech import SpeechStage
    from mmrag.ingest.stages import EmbedStage, ReadStage, TextEmbedStage

    init_ray(cfg.server)
    from ray.data import DataContext

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # after ray.data configured its loggers
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_stats_logs = False
    ctx.target_max_block_size = STREAM_BLOCK_BYTES

    encoder_pixels = cfg.models.retriever.max_image_pixels
    ds = ray.data.from_items(tasks, override_num_blocks=len(tasks))
    ds = ds.map_batches(
        ReadStage,
        fn_constructor_kwargs={
            "ingest_cfg": cfg.ingest.model_dump(),
            "encoder_pixels": encoder_pixels,
            "rows_per_table": cfg.ingest.embed.batch_size,
        },
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=cfg.ingest.read.num_cpus,
        **cfg.ingest.read.placement_options(),  # ingestion nodes only, when the profile says so
        # one file at a time per reader: a reader takes the next file when it is free, so one long PDF
        # does not leave files queued behind it while another reader idles
        compute=ray.data.ActorPoolStrategy(size=cfg.ingest.read.concurrency, max_tasks_in_flight_per_actor=1),
    )
    ds = ds.map_batches(
        EmbedStage,
        fn_constructor_kwargs={
            "models_cfg": cfg.models.model_dump(),
            "token_pooling_factor": cfg.ingest.token_pooling_factor,
            "batch_size": cfg.ingest.embed.batch_size,
            "threads": cfg.ingest.embed.threads,
        },
        batch_size=cfg.ingest.embed.batch_size,
        batch_format="pyarrow",
        num_cpus=cfg.ingest.embed.num_cpus,
        **cfg.ingest.embed.placement_options(),  # ingestion nodes only, when the profile says so
        num_gpus=cfg.ingest.embed.num_gpus or None,
        compute=ray.data.ActorPoolStrategy(size=cfg.ingest.embed.concurrency),
    )
    speech = cfg.ingest.speech
    if speech.enabled and any(t["doc_kind"] in ("video", "audio") for t in tasks):
        # its own actors after the encoder's: clips are embedded while earlier ones are transcribed, and the
        # words reach the text before the dense text model reads it
        ds = ds.map_batches(
            SpeechStage,
            fn_constructor_kwargs={"speech_cfg": speech.model_dump()},
            batch_size=speech.stage.batch_size,
            batch_format="pyarrow",
            num_cpus=speech.stage.num_cpus,
            num_gpus=speech.stage.num_gpus or None,
            compute=ray.data.ActorPoolStrategy(size=speech.stage.concurrency),
        )
    if cfg.models.text is not None:
        ds = ds.map_batches(
            TextEmbedStage,
            fn_constructor_kwargs={"text_cfg": cfg.models.text.model_dump(), "threads": cfg.ingest.text_embed.threads},
            batch_size=cfg.ingest.text_embed.batch_size,
            batch_format="pyarrow",
            num_cpus=cfg.ingest.text_embed.num_cpus,
            **cfg.ingest.text_embed.placement_options(),  # ingestion nodes only, when the profile says so
            num_gpus=cfg.ingest.text_embed.num_gpus or None,
            compute=ray.data.ActorPoolStrategy(size=cfg.ingest.text_embed.concurrency),
        )

    return ds.iter_batches(batch_format="pyarrow", batch_size=None)  # type: ignore[no-any-return]


def _optimize(store: LanceStore, cfg: MmragConfig, lease: WriterLease) -> dict[str, Any]:
    """Store upkeep after a run that wrote; the run has just refreshed the indexes, so they are only folded."""
    try:
        lease.ensure_held()
        return store.optimize(keep_versions_s=cfg.store.writer.keep_versions_s, refresh_indexes=False, lease=lease)
    except Exception as e:  # the documents are in; a failed upkeep is redone by the next run or mmrag store optimize
        log.exception("optimizing the store %s after ingestion failed", store.uri)
        return {"error": f"{type(e).__name__}: {e}"}


def _calibrate(cfg: MmragConfig, collection: str) -> dict[str, Any] | None:
    from mmrag.calibration import maybe_calibrate

    try:
        return maybe_calibrate(cfg, collection)
    except Exception as e:  # the documents are in; a failed calibration leaves the previous one (or the defaults)
        log.exception("calibrating collection %s failed", collection)
        return {"error": f"{type(e).__name__}: {e}"}


def _drop_unrecorded_versions(store: LanceStore, collection: str, docs: list[_DocProgress]) -> None:
    """Delete rows of exactly the versions about to be written, visible or not.

    ``finish_documents`` makes a document's rows visible before it records the document, so a run killed
    in between leaves visible rows of a version the documents table does not know; ``plan`` then schedules
    that version again and ``begin_documents`` (which drops only invisible rows) would let them double up.
    Any row of a scheduled version is such a leftover: ``plan`` skips versions that are recorded.
    TODO(store): belongs in ``LanceStore.begin_documents``.
    """
    from lancedb.expr import col, lit

    if not store.has_items() or not store.count_items(visible_only=False):
        return
    for start in range(0, len(docs), 64):
        conds = [
            (col("doc_id") == lit(S.doc_id(collection, d.source_uri))) & (col("content_hash") == lit(d.content_hash))
            for d in docs[start : start + 64]
        ]
        while len(conds) > 1:  # a balanced OR: a chain of 64 nests too deep for the SQL parser
            conds = [a | b for a, b in zip(conds[::2], conds[1::2], strict=False)] + conds[len(conds) // 2 * 2 :]
        store.table(S.ITEMS).delete(((col("collection") == lit(collection)) & conds[0]).to_sql())


def _store_errors(
    store: LanceStore, collection: str, doc: _DocProgress, errs: list[dict[str, Any]], run_id: str
) -> None:
    store.add_errors(
        [
            {
                "collection": collection,
                "source_uri": e["path"],
                "content_hash": doc.content_hash,
                "page": e.get("page"),
                "reason": e["reason"],
            }
            for e in errs
        ],
        run_id,
    )


def _finished(collection: str, d: _DocProgress, cfg: MmragConfig) -> FinishedDocument:
    return FinishedDocument(
        collection=collection,
        source_uri=d.source_uri,
        content_hash=d.content_hash,
        kind=d.kind,
        n_items=d.items,
        n_errors=d.errors,
        model_id=cfg.models.retriever.model,
    )


def _to_items_table(items: pa.Table, cfg: MmragConfig, dim: int, text_dim: int | None = None) -> pa.Table:
    n = items.num_rows
    schema = S.items_schema(dim, text_dim)
    now = dt.datetime.now(dt.UTC)
    colls = items["collection"].to_pylist()
    uris = items["source_uri"].to_pylist()
    hashes = items["content_hash"].to_pylist()
    mods = items["modality"].to_pylist()
    idx = items["index"].to_pylist()
    ids = [S.item_id(c, u, h, m, i) for c, u, h, m, i in zip(colls, uris, hashes, mods, idx, strict=True)]
    cols: dict[str, Any] = {
        "id": pa.array(ids),
        "doc_id": pa.array([S.doc_id(c, u) for c, u in zip(colls, uris, strict=True)]),
        "model_id": pa.array([cfg.models.retriever.model] * n),
        "model_revision": pa.array([cfg.models.retriever.revision] * n, pa.string()),
        "ingested_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        "visible": pa.array([False] * n),
    }
    arrays = []
    for f in schema:
        if f.name in cols:
            arrays.append(cols[f.name])
        elif f.name not in items.column_names and f.name in _DEFERRED_TEXT:
            arrays.append(pa.nulls(n, f.type))  # text vectors come after publishing (fill_text_vectors)
        elif f.name not in items.column_names and f.name in _TOKEN_COPIES:
            arrays.append(pa.nulls(n, f.type))  # LanceStore.add_items quantises them from the multivectors
        else:
            arrays.append(items[f.name].cast(f.type))
    return pa.Table.from_arrays(arrays, schema=schema)
