"""Every environment variable corral reads, parsed once, with its default and meaning.

Like Ollama's envconfig: one table of variables, each with a one-line description that
`corral env` prints. A bad value stops start-up with a message naming the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.core.errors import SettingsError

FOREVER = -1.0  # keep_alive below zero: keep the model loaded until the worker stops


def parse_duration(text: str | int | float) -> float:
    """Return seconds for an Ollama-style duration: "5m", "1h30m", "300", 300, "0", "-1".

    A bare number is seconds; any negative value means forever (returned as FOREVER).
    """
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        return FOREVER if text < 0 else float(text)
    text = str(text).strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = _parse_go_duration(text)
    return FOREVER if seconds < 0 else seconds


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def _parse_go_duration(text: str) -> float:
    """Parse Go's time.ParseDuration syntax ("1h2m3.5s", "-5m")."""
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    parts = _PART.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise ValueError(f"not a duration: {text!r}")
    return sign * sum(float(n) * _UNITS[u] for n, u in parts)


def _interval(text: str) -> float:
    """Seconds of a duration that must not be negative (parse_duration reads it)."""
    seconds = parse_duration(text)
    if seconds < 0:  # parse_duration's "forever"
        raise ValueError("must be 0 or more")
    return seconds


def _parse_host(text: str) -> tuple[str, int]:
    """Split "host:port", "host", ":port" or "http://host:port" as Ollama's OLLAMA_HOST does."""
    text = text.strip()
    text = re.sub(r"^https?://", "", text).rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "11434"
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in {text!r}")
    return host, int(port)


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


_SIZES = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def _size(text: str) -> int:
    """Bytes from "200MB", "1.5GiB", "512kb" or a bare number of bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _SIZES:
        raise ValueError("expected a size such as 200MB, 1GiB or a number of bytes")
    value = int(float(match.group(1)) * _SIZES[match.group(2).lower()])
    if value < 1:
        raise ValueError("must be at least 1 byte")
    return value


def _origins(text: str) -> list[str]:
    return [o.strip() for o in text.split(",") if o.strip()]


def _base_url(text: str) -> str:
    url = text.strip().rstrip("/")
    if not re.match(r"https?://[^/\s]+", url):
        raise ValueError("expected an http:// or https:// URL")
    return url


def _mirrors(text: str) -> tuple[tuple[str, str], ...]:
    """Parse "host=url,host=url" into ((host, url), ...), hosts lower-cased."""
    pairs = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        host, sep, url = item.partition("=")
        if not sep or not host.strip():
            raise ValueError(f"expected host=url, got {item!r}")
        pairs.append((host.strip().lower(), _base_url(url)))
    return tuple(pairs)


@dataclass(frozen=True)
class Variable:
    """One environment variable: its default (as text, or None) and what it means."""

    name: str
    default: str | None
    description: str
    parse: Callable[[str], Any] = str


VARIABLES: tuple[Variable, ...] = (
    Variable("CORRAL_HOST", "127.0.0.1:11434", "Address the HTTP API listens on (host:port)",
             _parse_host),
    Variable("CORRAL_HOME", "~/.corral",
             "Directory for corral's database, embedded Redis and models"),
    Variable("CORRAL_MODELS", None, "Model store (manifests + blobs); default $CORRAL_HOME/models"),
    Variable("CORRAL_REDIS_URL", None,
             "Redis broker and event bus; unset starts an embedded redis-server under CORRAL_HOME"),
    Variable("CORRAL_DATABASE_URL", None,
             "SQLAlchemy URL of the job history; unset is SQLite at $CORRAL_HOME/corral.db"),
    Variable("CORRAL_KEEP_ALIVE", "5m",
             "How long a model stays loaded after its last request (duration, 0, negative=forever)",
             parse_duration),
    Variable("CORRAL_NUM_PARALLEL", "4", "Sequences one loaded model decodes together in a worker",
             _positive_int),
    Variable("CORRAL_MAX_QUEUE", "512",
             "Interactive requests that may wait before new ones get 503",
             _positive_int),
    Variable("CORRAL_MAX_LOADED_MODELS", "2", "Models one worker keeps loaded at once (LRU beyond)",
             _positive_int),
    Variable("CORRAL_ORIGINS", "", "Extra allowed CORS origins, comma separated", _origins),
    Variable("CORRAL_DEBUG", "false", "Verbose logging", _parse_bool),
    Variable("CORRAL_LOAD_TIMEOUT", "5m",
             "How long a request waits for a worker to take it and load its model before 503",
             parse_duration),
    Variable("CORRAL_NUM_CTX", "2048", "Default context length of one sequence, in tokens",
             _positive_int),
    Variable("CORRAL_NUM_THREADS", "0", "Decode threads per model; 0 = the machine's cores",
             _non_negative_int),
    Variable("CORRAL_QUEUES", "cpu", "Queues a worker started by `corral serve` consumes"),
    Variable("CORRAL_DEVICE", "cpu", "Device label of this worker, recorded in each job row"),
    Variable("CORRAL_RESULT_TTL", "24h",
             "How long a job's events and results stay in Redis (the database keeps history)",
             parse_duration),
    Variable("CORRAL_REGISTRY_MIRRORS", "",
             "Registry hosts pulled from another base URL: host=url,... "
             "(e.g. registry.ollama.ai=http://mirror:5000)", _mirrors),
    Variable("CORRAL_HF_ENDPOINT", "https://huggingface.co",
             "Hugging Face Hub address used for hf.co/<user>/<repo> pulls", _base_url),
    Variable("CORRAL_BATCH_WINDOW", "64",
             "Lines of one batch queued or running at once; the rest wait in the database",
             _positive_int),
    Variable("CORRAL_MAX_UPLOAD", "200MB",
             "Largest batch file /v1/files and /batches accept (larger is 413)", _size),
    Variable("CORRAL_STREAM_INTERVAL", "50ms",
             "Shortest time between two streamed chunks of one job, times the sequences its "
             "model is running; the first token leaves at once, later tokens are joined "
             "(0 = one chunk per token)", _interval),
)

_BY_NAME = {v.name: v for v in VARIABLES}


@dataclass(frozen=True)
class Settings:
    """corral's configuration, built by `Settings.from_env()` and passed to every factory."""

    host: str = "127.0.0.1"
    port: int = 11434
    home: Path = field(default_factory=lambda: Path("~/.corral").expanduser())
    models: Path | None = None
    redis_url: str | None = None
    database_url: str | None = None
    keep_alive: float = 300.0
    num_parallel: int = 4
    max_queue: int = 512
    max_loaded_models: int = 2
    origins: tuple[str, ...] = ()
    debug: bool = False
    load_timeout: float = 300.0
    num_ctx: int = 2048
    num_threads: int = 0
    queues: str = "cpu"
    device: str = "cpu"
    result_ttl: float = 86400.0
    registry_mirrors: tuple[tuple[str, str], ...] = ()
    hf_endpoint: str = "https://huggingface.co"
    batch_window: int = 64
    max_upload: int = 200_000_000
    stream_interval: float = 0.05

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every CORRAL_* variable; raise SettingsError naming the first bad one."""
        env = os.environ if environ is None else environ
        values = {v.name: _read(v, env) for v in VARIABLES}
        host, port = values["CORRAL_HOST"]
        home = Path(values["CORRAL_HOME"]).expanduser()
        models = values["CORRAL_MODELS"]
        return cls(
            host=host,
            port=port,
            home=home,
            models=Path(models).expanduser() if models else None,
            redis_url=values["CORRAL_REDIS_URL"] or None,
            database_url=values["CORRAL_DATABASE_URL"] or None,
            keep_alive=values["CORRAL_KEEP_ALIVE"],
            num_parallel=values["CORRAL_NUM_PARALLEL"],
            max_queue=values["CORRAL_MAX_QUEUE"],
            max_loaded_models=values["CORRAL_MAX_LOADED_MODELS"],
            origins=tuple(values["CORRAL_ORIGINS"]),
            debug=values["CORRAL_DEBUG"],
            load_timeout=values["CORRAL_LOAD_TIMEOUT"],
            num_ctx=values["CORRAL_NUM_CTX"],
            num_threads=values["CORRAL_NUM_THREADS"],
            queues=values["CORRAL_QUEUES"],
            device=values["CORRAL_DEVICE"],
            result_ttl=values["CORRAL_RESULT_TTL"],
            registry_mirrors=values["CORRAL_REGISTRY_MIRRORS"],
            hf_endpoint=values["CORRAL_HF_ENDPOINT"],
            batch_window=values["CORRAL_BATCH_WINDOW"],
            max_upload=values["CORRAL_MAX_UPLOAD"],
            stream_interval=values["CORRAL_STREAM_INTERVAL"],
        )

    @property
    def models_dir(self) -> Path:
        """Where manifests/ and blobs/ live."""
        return self.models or self.home / "models"

    @property
    def database(self) -> str:
        """The SQLAlchemy URL of the job history."""
        return self.database_url or f"sqlite:///{self.home / 'corral.db'}"

    @property
    def base_url(self) -> str:
        """The URL a local client uses to reach this service."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def threads(self) -> int:
        """Decode threads: the configured count, or every core (the C default halves speed)."""
        return self.num_threads or os.cpu_count() or 1


def _read(variable: Variable, env: Mapping[str, str]) -> Any:
    raw = env.get(variable.name)
    if raw is None or raw == "":
        if variable.default is None:
            return None
        raw = variable.default
    try:
        return variable.parse(raw)
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"{variable.name}={raw!r} is invalid: {exc}") from None


def describe(environ: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """Return (name, current value, description) for every variable, for `corral env`."""
    env = os.environ if environ is None else environ
    return [(v.name, env.get(v.name, v.default or ""), v.description) for v in VARIABLES]
