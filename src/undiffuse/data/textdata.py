"""Text for the masked-diffusion language model: ``text:kjv`` and ``text:file:PATH``, character level.

- ``text:kjv``: the King James Bible from Debian's ``bible-kjv`` package (public domain), read with its ``bible``
  program; chapter headings and verse numbers are dropped and each verse becomes one line (31,102 lines,
  4.2 M characters).
- ``text:file:PATH``: any UTF-8 text file (a missing, empty, binary or non-UTF-8 file is refused in one line).

The vocabulary is the sorted set of characters of the whole text (so every split encodes), saved with the run
(``DataInfo.extra["text"]["vocab"]``); token id i is ``vocab[i]`` and id V = len(vocab) is the mask (or start)
token. Splits are contiguous blocks cut at line ends: train = the first 95 % of the text, test = the last 5 %;
the trainer's validation block is the tail of the training windows (``data.val_split=val`` has no split of its
own). A split is cut into windows of ``data.window`` characters (default 256): overlapping by half for
training, disjoint for test.

Writers: ``.txt`` (samples separated by a blank line) and ``.jsonl`` (one ``{"index", "text"}`` per line); a
position still masked is written as ``_``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from undiffuse.data.errors import DataError
from undiffuse.io import write_text

__all__ = ["TEXT_LENGTH", "MASK_CHAR", "kjv_text", "read_text_file", "source_text", "vocabulary", "encode",
           "decode", "split_text", "windows", "load_text", "text_info", "write_txt", "write_jsonl"]  # fmt: skip

TEXT_LENGTH = 256  # characters per training window on a CPU
MASK_CHAR = "_"
TRAIN_SHARE = 0.95
_VERSE = re.compile(r"^\s+\d+ (.*)$")


def kjv_text() -> str:
    """The King James Bible, one verse per line (Debian's ``bible-kjv``)."""
    if shutil.which("bible") is None:
        raise DataError("text:kjv needs Debian's bible-kjv package (the `bible` program) — apt-get install bible-kjv, "
                        "or use text:file:PATH")  # fmt: skip
    out = subprocess.run(["bible", "Genesis 1:1-Revelation 22:21"], capture_output=True, text=True, check=False)
    verses: list[str] = []
    after_blank = True
    for line in out.stdout.splitlines():
        m = _VERSE.match(line)
        if m:
            verses.append(m.group(1).strip())
        elif line.strip() and not after_blank and verses:
            verses[-1] += " " + line.strip()  # a verse wrapped over several lines (a heading follows a blank line)
        after_blank = not line.strip()
    if len(verses) < 1000:
        raise DataError(f"`bible` printed {len(verses)} verses, not the whole Bible — reinstall bible-kjv")
    return "\n".join(verses) + "\n"


def read_text_file(path: str) -> str:
    """A UTF-8 text file's contents (DataError for a missing, empty, binary or non-UTF-8 file)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: no such text file — check the path of text:file:PATH")
    raw = p.read_bytes()
    if b"\x00" in raw:
        raise DataError(f"{path} is a binary file, not text — give a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 (byte {e.start}) — convert it, e.g. iconv -t UTF-8") from None
    text = text.replace("\r\n", "\n").lstrip("\ufeff")
    if len(text.strip()) == 0:
        raise DataError(f"{path} holds no text — give a non-empty file")
    return text


def source_text(arg: str) -> str:
    """The whole text of a ``text:`` spec's argument (``kjv`` or ``file:PATH``)."""
    if arg == "kjv":
        return kjv_text()
    if arg.startswith("file:") and len(arg) > 5:
        return read_text_file(arg[5:])
    raise DataError(f"unknown text source {arg!r} — use text:kjv or text:file:PATH")


def vocabulary(text: str) -> str:
    """The sorted characters of ``text``."""
    return "".join(sorted(set(text)))


def encode(text: str, vocab: str) -> torch.Tensor:
    """Token ids int64 [len(text)] (DataError naming a character outside the vocabulary)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.frombuffer(vocab.encode("utf-32-le"), dtype=np.uint32)
    ids = np.searchsorted(table, codes)
    bad = (ids >= len(table)) | (table[np.minimum(ids, len(table) - 1)] != codes)
    if bad.any():
        ch = text[int(np.argmax(bad))]
        raise DataError(f"character {ch!r} is not in the model's vocabulary of {len(vocab)} characters — remove it")
    return torch.from_numpy(ids.astype(np.int64))


def decode(ids: torch.Tensor, vocab: str) -> str:
    """The text of token ids [L] (the mask id V as ``_``)."""
    chars = vocab + MASK_CHAR
    return "".join(chars[min(int(i), len(vocab))] for i in ids.tolist())


def split_text(text: str, split: str) -> str:
    """The contiguous block of ``split``: train = the first 95 % of the text, test = the rest, cut at a line end."""
    cut = text.rfind("\n", 0, int(len(text) * TRAIN_SHARE)) + 1 or int(len(text) * TRAIN_SHARE)
    return text[:cut] if split == "train" else text[cut:]


def windows(ids: torch.Tensor, length: int, stride: int) -> torch.Tensor:
    """Windows [N, length] of ``ids`` every ``stride`` positions (the last partial one dropped)."""
    if len(ids) < length:
        raise DataError(f"the text has {len(ids)} characters, fewer than one window of {length} — use a smaller "
                        "data.window or more text")  # fmt: skip
    return ids.unfold(0, length, stride).contiguous()


def text_info(vocab: str, length: int, source: str) -> dict:
    """What a text run keeps beside its weights (``DataInfo.extra``)."""
    return {"text": {"vocab": vocab, "length": int(length), "source": source}}


def load_text(arg: str, split: str, window: Optional[int] = None) -> Any:
    """The ``text:`` source: windows of token ids of ``split`` as a :class:`undiffuse.data.Dataset` of kind text."""
    from undiffuse.data import Dataset

    length = int(window or TEXT_LENGTH)
    if length < 2:
        raise DataError(f"data.window = {length} is too short for text — use e.g. 256")
    text = source_text(arg)
    vocab = vocabulary(text)
    ids = encode(split_text(text, split), vocab)
    x = windows(ids, length, length // 2 if split == "train" else length)
    return Dataset(x, None, "text", f"text:{arg}", extra=text_info(vocab, length, f"text:{arg}"))


def _texts(x: torch.Tensor, info: Any) -> list[str]:
    vocab = info.extra["text"]["vocab"]
    return [decode(row, vocab) for row in x]


def write_txt(x: torch.Tensor, path: Path, info: Any, **_: Any) -> Path:
    """The samples as text, separated by a blank line (written atomically)."""
    return write_text(path, "\n\n".join(s.rstrip("\n") for s in _texts(x, info)) + "\n")


def write_jsonl(x: torch.Tensor, path: Path, info: Any, start: int = 0, **_: Any) -> Path:
    """One ``{"index": i, "text": …}`` per line (written atomically)."""
    lines = [json.dumps({"index": start + k, "text": s}, ensure_ascii=False) for k, s in enumerate(_texts(x, info))]
    return write_text(path, "\n".join(lines) + "\n")
