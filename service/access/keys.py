"""API keys: created once and shown once, stored as a hash, checked on every request.

A key is a random secret of 256 bits, so a plain SHA-256 of it is as safe to keep as a slow
password hash would be, and lets a request find its key with one indexed lookup. The secret
itself is printed when the key is created and never stored.

Two roles. `admin` manages models (pull, create, copy, delete), keys and everyone's jobs.
`user` runs inference on the models its key allows (all, when the key names none) and sees
and cancels only what it made itself: jobs, batches and files carry their key's id as owner.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import JSON, DateTime, String, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from service.core.db import Base, aware, now
from service.core.errors import Conflict, InvalidRequest, NotFound
from service.models.names import ModelName, parse_name

SECRET_PREFIX = "corral-"
_SHOWN = 12  # characters of the secret kept to tell keys apart in listings
_TOUCH_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often per key


class Role(str, Enum):
    """What a key may do."""

    ADMIN = "admin"
    USER = "user"


def parse_role(text: Any) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise InvalidRequest(f"invalid field 'role': expected 'admin' or 'user', "
                             f"got {text!r}") from None


class ApiKey(Base):
    """One key. Columns mirror migrations/versions/0005."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    models: Mapped[list[str] | None] = mapped_column(JSON)  # None: every model
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def to_dict(self) -> dict[str, Any]:
        """The key as listings show it: never its secret, which is not stored."""
        def iso(value: datetime | None) -> str | None:
            return None if value is None else aware(value).isoformat()
        return {"id": self.id, "name": self.name, "role": self.role, "models": self.models,
                "prefix": self.prefix, "created_at": iso(self.created_at),
                "last_used_at": iso(self.last_used_at), "revoked_at": iso(self.revoked_at)}


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a key, or `LOCAL` while keys are not required."""

    key_id: str | None  # the owner recorded on what it makes; None for LOCAL
    name: str
    role: Role
    models: tuple[str, ...] | None = None  # allowlist; None: every model

    @property
    def admin(self) -> bool:
        return self.role is Role.ADMIN

    def may_use(self, model: str) -> bool:
        """Whether the allowlist covers `model`. An entry without a tag covers every tag of
        its model ("smollm2" allows smollm2:latest and smollm2:q8); one with a tag, that tag."""
        if self.admin or self.models is None:
            return True
        wanted = parse_name(model)
        return any(_covers(entry, wanted) for entry in self.models)

    def owns(self, owner: str | None) -> bool:
        """Whether a job, batch or file made by `owner` is this principal's to see."""
        return self.admin or owner == self.key_id


LOCAL = Principal(None, "local", Role.ADMIN)  # anyone, while keys are not required


def _covers(entry: str, wanted: ModelName) -> bool:
    allowed = parse_name(entry)
    if ":" not in entry.rpartition("/")[2]:  # no tag given: any tag
        allowed = dataclasses.replace(allowed, tag=wanted.tag)
    return allowed == wanted


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def normalized_models(models: list[str] | None) -> list[str] | None:
    """Check each allowlist entry is a model name (400 naming it otherwise)."""
    if models is None:
        return None
    for entry in models:
        if not isinstance(entry, str):
            raise InvalidRequest("invalid field 'models': expected a list of model names")
        parse_name(entry)
    return [entry.strip() for entry in models]


class KeyStore:
    """Create, verify, list and revoke keys through one sessionmaker."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def create(self, name: str, role: Role, models: list[str] | None = None
               ) -> tuple[ApiKey, str]:
        """Store a new key and return it with its secret, which only this call ever sees.
        409 if an unrevoked key already has the name (revoke it first to rotate)."""
        name = name.strip() if isinstance(name, str) else ""
        if not name or len(name) > 255:
            raise InvalidRequest("invalid field 'name': expected 1 to 255 characters")
        if self.active(name) is not None:
            raise Conflict(f"a key named '{name}' already exists; revoke it first")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(id=f"key_{uuid.uuid4().hex[:24]}", name=name, role=role.value,
                     models=normalized_models(models), digest=digest(secret),
                     prefix=secret[:_SHOWN], created_at=now())
        with self.sessions.begin() as session:
            session.add(key)
        return key, secret

    def verify(self, secret: str) -> Principal | None:
        """The principal an unrevoked key's secret stands for, or None. A token that is not
        one of corral's ("unused", "ollama": what clients send when no key is needed) is
        None without a database read."""
        if not secret.startswith(SECRET_PREFIX):
            return None
        with self.sessions() as session:
            key = session.scalars(select(ApiKey).where(ApiKey.digest == digest(secret))).first()
        if key is None or key.revoked_at is not None:
            return None
        self._touch(key)
        models = None if key.models is None else tuple(key.models)
        return Principal(key.id, key.name, Role(key.role), models)

    def _touch(self, key: ApiKey) -> None:
        """Note when a key was last used, without a write on every request."""
        stamp = now()
        if key.last_used_at is not None and stamp - aware(key.last_used_at) < _TOUCH_EVERY:
            return
        with self.sessions.begin() as session:
            session.execute(update(ApiKey).where(ApiKey.id == key.id)
                            .values(last_used_at=stamp))

    def active(self, name: str) -> ApiKey | None:
        query = select(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None))
        with self.sessions() as session:
            return session.scalars(query).first()

    def list(self, *, revoked: bool = False) -> list[ApiKey]:
        """Keys oldest first; revoked ones only when asked."""
        query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if not revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        with self.sessions() as session:
            return list(session.scalars(query))

    def revoke(self, name_or_id: str) -> ApiKey:
        """Revoke the unrevoked key with this id or name; it stops working at once."""
        query = select(ApiKey).where(
            (ApiKey.id == name_or_id) | (ApiKey.name == name_or_id),
            ApiKey.revoked_at.is_(None))
        with self.sessions.begin() as session:
            key = session.scalars(query).first()
            if key is None:
                raise NotFound(f"no unrevoked key named '{name_or_id}'")
            key.revoked_at = now()
        return key

    def any_admin(self) -> bool:
        query = select(ApiKey.id).where(ApiKey.role == Role.ADMIN.value,
                                        ApiKey.revoked_at.is_(None)).limit(1)
        with self.sessions() as session:
            return session.scalar(query) is not None
