"""Uploaded files: rows in `files`, bytes under $CORRAL_HOME/files/<id>.

Batch input files arrive here (from /v1/files, or the body of a native POST /batches) and
are read line by line when a batch is created from them. A batch's output and error files
have rows too (purpose "batch_output") but no bytes on disk: the OpenAI face renders them
from the job rows whenever they are read, so nothing is written twice.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

from sqlalchemy import BigInteger, DateTime, String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from service.core.db import Base, aware, now
from service.core.errors import CorralError, InvalidRequest, NotFound

_CHUNK = 1 << 20


class TooLarge(CorralError):
    """The upload is over CORRAL_MAX_UPLOAD."""

    status = 413


class File(Base):
    """One uploaded (or produced) file. Columns mirror migrations/versions/0002."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    owner: Mapped[str | None] = mapped_column(String(32))  # the API key it was uploaded with

    @property
    def created(self) -> int:
        """Creation time in unix seconds, as OpenAI's objects carry it."""
        return int(aware(self.created_at).timestamp())


def new_id() -> str:
    return f"file-{uuid.uuid4().hex}"


class FileStore:
    """Save, list, read and delete files; `limit` bytes at most per upload."""

    def __init__(self, sessions: sessionmaker[Session], root: Path, limit: int) -> None:
        self.sessions = sessions
        self.root = root
        self.limit = limit

    def path(self, file_id: str) -> Path:
        return self.root / file_id

    def check_size(self, length: int | None) -> None:
        """413 before reading a body whose declared length is over the limit."""
        if length is not None and length > self.limit:
            raise TooLarge(f"file too large: {length} bytes, the limit is {self.limit} "
                           "(CORRAL_MAX_UPLOAD)")

    def save(self, source: IO[bytes], filename: str, purpose: str,
             owner: str | None = None) -> File:
        """Copy `source` to disk, refusing (413) once it passes the limit, then record it.

        The row is written last, so a refused or broken upload leaves nothing behind.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        file_id = new_id()
        partial = self.root / f".{file_id}.partial"
        size = 0
        try:
            with open(partial, "wb") as out:
                while chunk := source.read(_CHUNK):
                    size += len(chunk)
                    self.check_size(size)
                    out.write(chunk)
            os.replace(partial, self.path(file_id))
        finally:
            partial.unlink(missing_ok=True)
        return self.record(file_id, filename, purpose, size, owner)

    def record(self, file_id: str, filename: str, purpose: str, size: int,
               owner: str | None = None) -> File:
        """Add a file's row."""
        row = File(id=file_id, purpose=purpose, filename=filename[:255] or "upload.jsonl",
                   bytes=size, created_at=now(), owner=owner)
        with self.sessions.begin() as session:
            session.add(row)
        return row

    def get(self, file_id: str) -> File:
        with self.sessions() as session:
            row = session.get(File, file_id)
        if row is None:
            raise NotFound(f"file '{file_id}' not found")
        return row

    def list(self, *, purpose: str | None = None, after: str | None = None,
             limit: int = 10000, ascending: bool = False, owner: str | None = None
             ) -> list[File]:
        """Files by creation time; `after` is the id of the last file of the previous page,
        `owner` the key whose files alone are wanted."""
        query = select(File)
        if owner:
            query = query.where(File.owner == owner)
        if purpose:
            query = query.where(File.purpose == purpose)
        order = (File.created_at, File.id) if ascending else (File.created_at.desc(),
                                                               File.id.desc())
        if after:
            last = self.get(after)
            key = (File.created_at, File.id)
            if ascending:
                query = query.where((key[0] > last.created_at) |
                                    ((key[0] == last.created_at) & (key[1] > last.id)))
            else:
                query = query.where((key[0] < last.created_at) |
                                    ((key[0] == last.created_at) & (key[1] < last.id)))
        with self.sessions() as session:
            return list(session.scalars(query.order_by(*order).limit(limit)))

    def delete(self, file_id: str) -> None:
        """Remove the row and the bytes; NotFound if there is no such file."""
        self.get(file_id)
        with self.sessions.begin() as session:
            session.execute(delete(File).where(File.id == file_id))
        self.path(file_id).unlink(missing_ok=True)

    def lines(self, file_id: str) -> Iterator[str]:
        """The stored file's lines as text; 400 if it is not UTF-8."""
        path = self.path(file_id)
        if not path.is_file():
            raise InvalidRequest(f"file '{file_id}' has no stored content")
        with open(path, "rb") as fh:
            for raw in fh:
                try:
                    yield raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError:
                    raise InvalidRequest(f"file '{file_id}' is not UTF-8 text") from None

    def open(self, file_id: str) -> IO[bytes]:
        return open(self.path(file_id), "rb")
