"""Tiny random-weight checkpoints that stand in for the real models, built offline and deterministically.

``build_tiny(out_dir)`` writes three checkpoints that load exactly like the production ones:

* ``<out>/colqwen2``: a ColQwen2 (colpali-engine) retriever with its ``ColQwen2Processor``;
* ``<out>/qwen2-vl``: a ``Qwen2VLForConditionalGeneration`` generator with processor and chat template,
  loadable by transformers and by vLLM;
* ``<out>/cross-encoder``: a BERT sequence-classification cross-encoder for the text reranker.

Both share a byte-level BPE tokenizer trained here with ``tokenizers`` on a small built-in corpus and carrying
Qwen2-VL's special tokens, so no hub access is ever needed. The weights are random: answers are gibberish and
retrieval scores are meaningless, but every code path (preprocessing, forward passes, vLLM serving) runs for real.

Each checkpoint holds a manifest (``mmrag-tiny.json``: builder format, seed, spec, sha256 of every file).
A later call finds a matching manifest and only verifies the hashes; ``force=True`` rebuilds. A build happens in a
temporary directory beside the target and is renamed into place when complete, so an interrupted build never
leaves a checkpoint that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from mmrag.config import TINY_CROSS_ENCODER, TINY_GENERATOR, TINY_RETRIEVER

#: Bump when the build recipe changes in a way that changes the files: older checkpoints are then rebuilt.
BUILD_FORMAT = 1
MANIFEST_NAME = "mmrag-tiny.json"
WEIGHTS_NAME = "model.safetensors"

Status = Literal["built", "present"]

#: Qwen2-VL's added tokens, in Qwen's id order (151643...). Here they follow the trained BPE vocabulary.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: Qwen2-VL-Instruct's chat template: string or list content; image / image_url and video parts become
#: ``<|vision_start|><|image_pad|><|vision_end|>`` (resp. ``<|video_pad|>``), which the processor expands.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Pixel bounds of the tiny image processors: 4 to 64 merged visual tokens per image.
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 64 * 28 * 28

#: Trained BPE vocabulary size (byte alphabet + merges), before the special tokens are appended.
BPE_VOCAB_SIZE = 1536

#: Architecture of each checkpoint. Head sizes are 32 where vLLM's CPU attention needs a supported size;
#: ``mrope_section`` sums to head_dim / 2 as Qwen2-VL's multimodal rotary embedding requires.
SPECS: dict[str, dict[str, Any]] = {
    TINY_RETRIEVER: {
        "kind": "colqwen2",
        "text": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 4096,
            "mrope_section": [4, 6, 6],
        },
        "vision": {"depth": 2, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2},
        "embedding_dim": 128,
    },
    TINY_GENERATOR: {
        "kind": "qwen2_vl",
        "text": {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "mrope_section": [4, 6, 6],
        },
        "vision": {"depth": 2, "embed_dim": 64, "num_heads": 2, "mlp_ratio": 2},
    },
    # A BERT-architecture cross-encoder (one relevance logit per (query, passage) pair), the shape of
    # cross-encoder/ms-marco-MiniLM-L-6-v2, for the text reranker's offline path.
    TINY_CROSS_ENCODER: {
        "kind": "cross_encoder",
        "text": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 512,
        },
    },
}

# A small original English + technical corpus: enough text for ~1.5k BPE merges over words that documents,
# queries and answers in this project actually use (retrieval, pages, charts, tables, statistics, code).
CORPUS = r"""
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
This document describes how the retrieval system finds the right page, image or video clip for a question.
Every page of a PDF is rendered to an image, and a vision language model turns the image into many vectors.
Each query is encoded into vectors as well, and the score of a page is the sum of the best matches.
The method is called late interaction, because query and document tokens meet only at scoring time.
Figure 1 shows the architecture of the service: ingestion, storage, retrieval, reranking and generation.
Table 2 lists the results on the benchmark; the best value in each column is printed in bold.
The chart on page 4 plots revenue against time: sales grew by 12 percent in 2023 and by 8 percent in 2024.
A bar chart compares the accuracy of five models; the line chart shows the loss during training.
The pie chart shows the share of each category: documents 45%, images 30%, videos 15% and other 10%.
The mean of the sample is 4.2 and the standard deviation is 1.3; the median is slightly lower than the mean.
A confidence interval of 95 percent contains the true parameter in 95 of 100 repeated experiments.
The p-value measures how surprising the data would be if the null hypothesis were true.
Linear regression fits a straight line to the points by minimising the sum of squared residuals.
The variance of the estimator decreases as the number of observations increases.
In the appendix we report the full tables, the hyperparameters and the hardware used for every experiment.
The invoice is due within thirty days. Please include the order number on every payment.
The meeting is scheduled for Monday at ten o'clock in the main conference room on the second floor.
Section 3 introduces the notation; section 4 presents the algorithm; section 5 discusses the experiments.
The user asked: what does the diagram on the third page show? The answer cites page 3 of the report.
What is the total cost in the second quarter? Which model has the highest recall at ten?
How many frames are sampled from each clip, and at what time does the speaker show the slide?
The video starts with an introduction, then the presenter explains the results using a whiteboard.
Each clip is ten seconds long; four frames are sampled uniformly and embedded together.
Optical character recognition extracts the text from scanned pages that have no text layer.
The index stores one row per page with its vectors, its text, a thumbnail and the source path.
Search can be visual, textual or hybrid; hybrid search fuses both rankings with reciprocal rank fusion.
The reranker computes the exact maximum similarity between every query token and every page token.
The generator reads the retrieved pages and writes a short answer with citations in square brackets.
Install the package with pip, then run the command line tool to build the index and start the server.
The configuration file is written in YAML; unknown keys are rejected so that typos are found early.
def score(query, document):
    return sum(max(q @ d for d in document) for q in query)
import numpy as np
x = np.array([1.0, 2.0, 3.0], dtype=np.float32)
for i in range(10):
    print(i, x.mean(), x.std())
if value is None:
    raise ValueError("value must not be None")
class Encoder:
    def __init__(self, model, processor, device="cpu"):
        self.model = model
SELECT id, title, page FROM documents WHERE collection = 'default' ORDER BY score DESC LIMIT 10;
GET /v1/search?q=revenue+growth&k=5 HTTP/1.1
POST /v1/chat/completions {"model": "mmrag", "messages": [{"role": "user", "content": "hello"}]}
{"id": 42, "name": "report.pdf", "pages": 12, "tags": ["finance", "quarterly"], "ok": true}
https://example.com/docs/index.html and /home/user/data/file.txt and C:\Users\name\file.txt
Error: file not found. Warning: the page is empty. Info: 100 pages indexed in 2.5 seconds.
The temperature was 21.5 degrees Celsius; the pressure was 1013 hPa; the humidity was 60 percent.
One, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve, twenty, hundred, thousand.
January February March April May June July August September October November December.
Monday Tuesday Wednesday Thursday Friday Saturday Sunday. Morning, afternoon, evening and night.
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 20 24 25 30 32 40 50 64 100 128 256 512 1000 1024 2048 4096.
Red, green, blue, yellow, black, white, orange, purple, grey. Left, right, top, bottom, center, middle.
The engine processes a batch of requests in parallel and streams the tokens back to the client.
Memory usage depends on the number of tokens in the cache, the model size and the batch size.
The GPU has more memory than the CPU machine, but the CPU profile is easier to run on a laptop.
A cluster has a head node and worker nodes; each replica of a deployment runs in its own process.
When a replica fails, the controller starts a new one; requests are retried on a healthy replica.
The photograph shows a street at night with cars, lights, people walking and a shop on the corner.
The slide contains a title, three bullet points and a small logo in the lower right corner.
The scanned receipt lists bread, milk, eggs, coffee and apples, with a total of 23.40 euros.
The map shows the river, two bridges, the old town and the railway station north of the park.
Abstract. We propose a simple and efficient approach to multimodal document retrieval.
Introduction. Documents contain text, tables, figures and layout that plain text search ignores.
Related work. Dense retrieval encodes text into a single vector; late interaction keeps one vector per token.
Conclusion. Visual retrieval over page images is accurate and avoids fragile parsing pipelines.
References. [1] Smith and Jones, 2020. [2] Brown et al., 2021. [3] Garcia, Lee and Chen, 2024.
Questions and answers: Who wrote the report? When was it published? Where is the data stored? Why?
The model was trained for three epochs with a learning rate of 0.0001 and a batch size of 32.
Accuracy improved from 71.3 to 78.9 while latency dropped from 120 milliseconds to 45 milliseconds.
The file is too large. The image could not be decoded. The request timed out after 30 seconds.
Hello, world! Thank you for your question. Here is a summary of the document in three sentences.
""".strip()


class TinyModelError(RuntimeError):
    """A tiny checkpoint is missing files or its files do not match its manifest."""


# ------------------------------------------------------------------------------------------------ hashing
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` except the manifest, keyed by POSIX relative path (sorted)."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    return {p.relative_to(root).as_posix(): _sha256(p) for p in files}


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((path / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def verify_tiny(path: str | Path) -> str:
    """Check a tiny checkpoint's files against its manifest; return the weights' sha256.

    Raises :class:`TinyModelError` naming each missing or changed file.
    """
    path = Path(path)
    manifest = _read_manifest(path)
    if manifest is None or not isinstance(manifest.get("files"), dict):
        raise TinyModelError(
            f"{path} has no readable {MANIFEST_NAME}; rebuild it with `mmrag models build-tiny --force`"
        )
    problems = []
    for rel, expected in manifest["files"].items():
        f = path / rel
        if not f.is_file():
            problems.append(f"{rel}: missing")
        elif _sha256(f) != expected:
            problems.append(f"{rel}: sha256 differs from the manifest")
    if problems:
        raise TinyModelError(
            f"tiny checkpoint {path} is corrupted ({'; '.join(problems)}); "
            "rebuild it with `mmrag models build-tiny --force`"
        )
    return manifest["files"][WEIGHTS_NAME]


# ---------------------------------------------------------------------------------------------- building
def _train_tokenizer() -> Any:
    """Train a byte-level BPE on :data:`CORPUS` and wrap it as a transformers ``Qwen2Tokenizer``."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    # The same normaliser and pre-tokeniser as Qwen2's tokenizer, so text splits the way it does for real models.
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    bpe.train_from_iterator(CORPUS.splitlines(), trainer=trainer)

    state = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(state["vocab"])
    # Merges serialise as [a, b] pairs (or "a b" strings in older releases); Qwen2Tokenizer needs tuples.
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in state["merges"]]
    for tok in SPECIAL_TOKENS:
        vocab[tok] = len(vocab)

    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_special_tokens({"extra_special_tokens": list(SPECIAL_TOKENS)})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _qwen2vl_config(spec: dict[str, Any], tokenizer: Any) -> Any:
    from transformers import Qwen2VLConfig

    t, v = spec["text"], spec["vision"]
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    # Round the vocabulary up to a multiple of 64 (as real checkpoints do) so embedding rows cover every token.
    vocab_size = -(-len(tokenizer) // 64) * 64
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": t["hidden_size"],
        "intermediate_size": t["intermediate_size"],
        "num_hidden_layers": t["num_hidden_layers"],
        "num_attention_heads": t["num_attention_heads"],
        "num_key_value_heads": t["num_key_value_heads"],
        "max_position_embeddings": t["max_position_embeddings"],
        "max_window_layers": t["num_hidden_layers"],
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": t["mrope_section"]},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }
    vision_config = {
        "depth": v["depth"],
        "embed_dim": v["embed_dim"],
        "num_heads": v["num_heads"],
        "mlp_ratio": v["mlp_ratio"],
        "hidden_size": t["hidden_size"],
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
    }
    return Qwen2VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
        dtype="float32",
    )


def _image_processor() -> Any:
    from transformers import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)


def _video_processor() -> Any:
    from transformers import Qwen2VLVideoProcessor

    kwargs: dict[str, Any] = {"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS}
    # Bound a whole video's pixel cost the way qwen-vl-utils does (and silence transformers' warning about it);
    # the option exists in transformers 5.x until it becomes the default.
    if hasattr(Qwen2VLVideoProcessor, "cap_pixels_per_frame"):
        kwargs["cap_pixels_per_frame"] = True
    return Qwen2VLVideoProcessor(**kwargs)


def _write_retriever(tmp: Path, spec: dict[str, Any], seed: int, tokenizer: Any) -> None:
    import torch
    from colpali_engine.models import ColQwen2, ColQwen2Processor

    config = _qwen2vl_config(spec, tokenizer)
    torch.manual_seed(seed)
    model = ColQwen2(config).eval()
    if model.dim != spec["embedding_dim"]:
        raise TinyModelError(
            f"colpali-engine's ColQwen2 projects to {model.dim} dims, spec says {spec['embedding_dim']}"
        )
    model.save_pretrained(tmp)
    processor = ColQwen2Processor(
        image_processor=_image_processor(),
        tokenizer=tokenizer,
        video_processor=_video_processor(),
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(tmp)


def _write_generator(tmp: Path, spec: dict[str, Any], seed: int, tokenizer: Any) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    config = _qwen2vl_config(spec, tokenizer)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=eos,
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    model.save_pretrained(tmp)
    processor = Qwen2VLProcessor(
        image_processor=_image_processor(),
        tokenizer=tokenizer,
        video_processor=_video_processor(),
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(tmp)


def _write_cross_encoder(tmp: Path, spec: dict[str, Any], seed: int, tokenizer: Any) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=len(tokenizer),
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        type_vocab_size=2,
        **spec["text"],
    )
    torch.manual_seed(seed)
    BertForSequenceClassification(config).eval().save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)


_WRITERS = {"colqwen2": _write_retriever, "qwen2_vl": _write_generator, "cross_encoder": _write_cross_encoder}


@contextlib.contextmanager
def _lock(out_dir: Path) -> Iterator[None]:
    """Serialise builders of one ``out_dir`` across processes (Ray workers may start one each)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, the atomic rename still protects readers
        yield
        return
    with (out_dir / ".build.lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """Hide transformers' "Writing model shards" bar during a build, restoring the caller's setting."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("torch", "transformers", "tokenizers", "colpali-engine"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "absent"
    return out


def _build_one(target: Path, name: str, spec: dict[str, Any], seed: int, tokenizer: Any) -> str:
    """Build ``name`` into a temp dir beside ``target`` and swap it in; return the weights' sha256."""
    # A plain mkdir (not mkdtemp's 0700) so the checkpoint gets the caller's umask, like any other directory.
    tmp = target.parent / f".{name}.building-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        with _quiet_progress():
            _WRITERS[spec["kind"]](tmp, spec, seed, tokenizer)
        file_mode = tmp.stat().st_mode & 0o666
        for f in tmp.rglob("*"):
            if f.is_file():
                f.chmod(file_mode)  # safetensors writes 0600 via a temp file
        files = _hash_tree(tmp)
        if WEIGHTS_NAME not in files:
            raise TinyModelError(f"building {name} wrote no {WEIGHTS_NAME} (files: {sorted(files)})")
        manifest = {
            "format": BUILD_FORMAT,
            "name": name,
            "seed": seed,
            "spec": spec,
            "versions": _versions(),
            "files": files,
        }
        # The manifest goes in last: a directory without one is never taken for a finished checkpoint.
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=target.parent))
            target.rename(old / name)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return files[WEIGHTS_NAME]


def _matches(manifest: dict[str, Any] | None, spec: dict[str, Any], seed: int) -> bool:
    return (
        manifest is not None
        and manifest.get("format") == BUILD_FORMAT
        and manifest.get("seed") == seed
        and manifest.get("spec") == json.loads(json.dumps(spec))
    )


def build_tiny(out_dir: str | Path, *, force: bool = False, seed: int = 0) -> dict[str, dict[str, str]]:
    """Build (or verify) the tiny retriever and generator under ``out_dir``; no network is used.

    Returns ``{name: {"path", "status": "built" | "present", "sha256"}}`` where ``sha256`` is the weights
    file's hash. A checkpoint whose manifest matches (same format, seed and spec) is verified, not rebuilt;
    if its files changed since it was built, :class:`TinyModelError` is raised (rebuild with ``force=True``).
    The same seed gives byte-identical files on every run with the same library versions.
    """
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict[str, str]] = {}
    with _lock(out):
        # Holding the lock, no other builder is running: temp dirs left here were killed mid-build (kill -9).
        for stale in [*out.glob(".*.building-*"), *out.glob(".*.old-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        tokenizer = None
        for name, spec in SPECS.items():
            target = out / name
            if not force and _matches(_read_manifest(target), spec, seed):
                summary[name] = {"path": str(target), "status": "present", "sha256": verify_tiny(target)}
                continue
            if tokenizer is None:
                tokenizer = _train_tokenizer()
            sha = _build_one(target, name, spec, seed, tokenizer)
            summary[name] = {"path": str(target), "status": "built", "sha256": sha}
    return summary


def tiny_path(out_dir: str | Path, name: str) -> Path:
    """Directory of tiny checkpoint ``name`` under ``out_dir`` (it may not exist yet)."""
    if name not in SPECS:
        raise ValueError(f"unknown tiny model {name!r}; known: {', '.join(SPECS)}")
    return Path(out_dir).expanduser() / name


def is_built(path: str | Path) -> bool:
    """True when ``path`` holds a finished tiny checkpoint (its manifest is present); hashes are not checked."""
    return _read_manifest(Path(path)) is not None


__all__ = [
    "BUILD_FORMAT",
    "CHAT_TEMPLATE",
    "MANIFEST_NAME",
    "SPECIAL_TOKENS",
    "SPECS",
    "TinyModelError",
    "build_tiny",
    "is_built",
    "tiny_path",
    "verify_tiny",
]
