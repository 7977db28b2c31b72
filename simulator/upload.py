"""files.uploadFileBase64: every upload is a new file, typed by its content.

LM Studio stores each upload under a fresh identifier (the same bytes twice are two
files), reports the decoded size, and types the file from its bytes: `image` only for
an image format it reads; a PDF, a Word document, text, or `unknown` otherwise.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import time
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from simulator import errors

_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")
_PLAIN_SUFFIXES = {"", ".txt", ".text", ".log"}


@dataclass
class UploadedFile:
    identifier: str
    name: str
    file_type: str
    size_bytes: int


@dataclass
class Uploads:
    """Files uploaded since the simulator started, by identifier."""

    files: dict[str, UploadedFile] = field(default_factory=dict)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add(self, name: str, file_type: str, size_bytes: int) -> UploadedFile:
        suffix = PurePath(name).suffix
        identifier = f"{int(time.time() * 1000)} - {next(self._numbers)}{suffix}"
        upload = UploadedFile(identifier, name, file_type, size_bytes)
        self.files[identifier] = upload
        return upload


def file_type(name: str, data: bytes) -> str:
    """The FileType LM Studio gives these bytes."""
    if data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return "image"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if data.startswith(b"PK\x03\x04") and b"word/" in data[:4096]:
        return "application/word"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown"
    return "text/plain" if PurePath(name).suffix.lower() in _PLAIN_SUFFIXES else "text/other"


def store_upload(uploads: Uploads, name: str, content_base64: str) -> dict[str, Any]:
    try:
        data = base64.b64decode(content_base64, validate=True)
    except (binascii.Error, ValueError):
        raise errors.SimError({"title": "Invalid base64 file content"}) from None
    upload = uploads.add(name, file_type(name, data), len(data))
    return {"identifier": upload.identifier, "fileType": upload.file_type,
            "sizeBytes": upload.size_bytes}
