"""`corral keys create|list|revoke`: API keys, managed on the machine that holds the database.

Unlike the other client commands this one does not go through the API, for the same reason
`corral serve` does not: it must work before any key exists and while the API requires one
(a first admin key on a server bound beyond loopback). Whoever can open the database (the
CORRAL_HOME or CORRAL_DATABASE_URL the service uses) is its admin already. Admin keys can
manage keys remotely too, through GET/POST/DELETE /keys.
"""

from __future__ import annotations

from typing import Any

import click


def _store() -> Any:
    """A KeyStore on the service's database, brought to the current schema first."""
    from service.access.keys import KeyStore
    from service.core.db import make_engine, make_sessionmaker, upgrade
    from service.core.errors import SettingsError
    from service.core.settings import Settings

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(exc.message) from None
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database)
    return KeyStore(make_sessionmaker(make_engine(settings.database)))


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(getattr(exc, "message", str(exc)))


@click.group()
def keys() -> None:
    """Create, list and revoke API keys (stored as hashes; each is shown once)."""


@keys.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "user"]), default="user", show_default=True,
              help="admin: manage models, keys and all jobs; user: run inference, own jobs.")
@click.option("--models", default=None, metavar="A,B",
              help="Models a user key may run (a name without a tag allows every tag).")
def create(name: str, role: str, models: str | None) -> None:
    """Create a key and print it: this is the only time it is shown."""
    from service.access.keys import Role
    from service.core.errors import CorralError

    allowed = [m.strip() for m in models.split(",") if m.strip()] if models else None
    try:
        key, secret = _store().create(name, Role(role), allowed)
    except CorralError as exc:
        raise _fail(exc) from None
    click.echo(secret)
    click.echo(f"created {key.role} key '{key.name}' ({key.id}); it is not shown again: "
               "send it as 'Authorization: Bearer <key>' or set CORRAL_API_KEY", err=True)


@keys.command("list")
@click.option("--all", "everything", is_flag=True, help="Include revoked keys.")
def list_keys(everything: bool) -> None:
    """The keys: name, role, allowed models, when created and last used."""
    rows = [key.to_dict() for key in _store().list(revoked=everything)]
    click.echo(f"{'NAME':<20} {'ID':<29} {'ROLE':<6} {'MODELS':<24} {'CREATED':<20} "
               f"{'LAST USED':<20} REVOKED")
    for row in rows:
        models = ",".join(row["models"]) if row["models"] else "*"
        click.echo(f"{row['name']:<20} {row['id']:<29} {row['role']:<6} {models:<24} "
                   f"{_day(row['created_at']):<20} {_day(row['last_used_at']):<20} "
                   f"{_day(row['revoked_at'])}")


def _day(stamp: str | None) -> str:
    return "-" if stamp is None else stamp[:19].replace("T", " ")


@keys.command("revoke")
@click.argument("name_or_id")
def revoke(name_or_id: str) -> None:
    """Revoke a key by name or id: requests with it are refused (401) from now on."""
    from service.core.errors import CorralError

    try:
        key = _store().revoke(name_or_id)
    except CorralError as exc:
        raise _fail(exc) from None
    click.echo(f"revoked key '{key.name}' ({key.id})")
