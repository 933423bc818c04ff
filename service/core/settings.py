"""Every environment variable corral reads, parsed once, with its default and meaning.

Like Ollama's envconfig: one table of variables, each with a one-line description that
`corral env` prints. A bad value stops start-up with a message naming the variable.

Each variable is declared once, as a field of `Settings` (`setting(name, default, parse,
description)`); the field's default, `Settings.from_env`, `VARIABLES` and `describe()` are all
derived from that declaration, so a default cannot drift between two places.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.core.errors import SettingsError

FOREVER = -1.0  # keep_alive below zero: keep the model loaded until the worker stops
CENTURY = 100 * 365.25 * 86400.0  # seconds; a keep_alive longer than this means forever


def parse_duration(text: str | int | float) -> float:
    """Return seconds for an Ollama-style duration: "5m", "1h30m", "300", 300, "0", "-1".

    A bare number is seconds; any negative value means forever (returned as FOREVER). NaN is
    no duration at all ("nan" and JSON's NaN both parse as floats, so it is refused here).
    """
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        text = str(text).strip()
        try:
            seconds = float(text)
        except ValueError:
            seconds = _parse_go_duration(text)
    if math.isnan(seconds):
        raise ValueError(f"not a duration: {text!r}")
    return FOREVER if seconds < 0 else seconds


def parse_keep_alive(text: str | int | float) -> float:
    """A keep_alive: parse_duration, where anything beyond a century (infinity too) is forever.

    Ollama saturates a duration at Go's largest (about 292 years) and /api/ps shows that as
    forever; corral turns an expiry into a wall-clock time, which cannot pass the year 9999, so
    a value no one can mean literally (`1e308`) is read as what it amounts to: forever.
    """
    seconds = parse_duration(text)
    return FOREVER if seconds > CENTURY else seconds


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


def _positive_duration(text: str) -> float:
    """Seconds of a duration that must be more than 0."""
    seconds = _interval(text)
    if seconds <= 0:
        raise ValueError("must be more than 0")
    return seconds


_DAYS = re.compile(r"(\d+(?:\.\d+)?)d")


def parse_span(text: str) -> float:
    """A span of history: a duration ("720h", "90m") or whole days ("30d", "7d"), which
    people say of history and Go durations cannot; negative means forever (FOREVER)."""
    days = _DAYS.fullmatch(text.strip().lower())
    return float(days.group(1)) * 86400.0 if days else parse_duration(text)


def _retention(text: str) -> float:
    """Seconds of history to keep (parse_span); 0, or a negative value, keeps every row."""
    seconds = parse_span(text)
    return 0.0 if seconds < 0 else seconds


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


AUTH_MODES = ("", "required")


def _auth(text: str) -> str:
    value = text.strip().lower()
    if value not in AUTH_MODES:
        raise ValueError(f"expected 'required' or nothing, got {text!r}")
    return value


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


def _origins(text: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in text.split(",") if o.strip())


def _path(text: str) -> Path:
    """A directory as the user wrote it, with `~` expanded (so it follows $HOME at parse time)."""
    return Path(text).expanduser()


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


_VARIABLE_KEY, _PART_KEY = "corral.variable", "corral.part"  # keys of a field's metadata


@dataclass(frozen=True)
class Variable:
    """One environment variable: its default (as a user would write it, or None) and meaning.

    The default is text, not a parsed value, so `corral env`, `--help` and the README show
    exactly what a user would type, and the parsed default goes through the same parser.
    """

    name: str
    default: str | None
    parse: Callable[[str], Any]
    description: str

    def read(self, env: Mapping[str, str]) -> Any:
        """Parse this variable from `env`; unset or empty means the default (None stays None)."""
        raw = env.get(self.name)
        if raw is None or raw == "":
            raw = self.default
        if raw is None:
            return None
        try:
            return self.parse(raw)
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"{self.name}={raw!r} is invalid: {exc}") from None

    def field(self, part: int | None = None) -> Any:
        """A `Settings` field filled from this variable (or item `part` of its parsed value).

        The default is a factory so it is parsed when a Settings is built: `~` in CORRAL_HOME
        follows $HOME then, as `from_env` does.
        """
        return dataclasses.field(default_factory=lambda: _pick(self.read({}), part),
                                 metadata={_VARIABLE_KEY: self, _PART_KEY: part})


def _pick(value: Any, part: int | None) -> Any:
    """The whole parsed value, or one item of it when a variable fills several fields."""
    return value if part is None else value[part]


def setting(name: str, default: str | None, parse: Callable[[str], Any],
            description: str) -> Any:
    """Declare a `Settings` field read from one environment variable (the usual case)."""
    return Variable(name, default, parse, description).field()


# CORRAL_HOST fills two fields, host and port, so it is declared once here and shared.
_HOST = Variable("CORRAL_HOST", "127.0.0.1:11434", _parse_host,
                 "Address the HTTP API listens on (host:port)")


@dataclass(frozen=True)
class Settings:
    """corral's configuration, built by `Settings.from_env()` and passed to every factory."""

    host: str = _HOST.field(part=0)
    port: int = _HOST.field(part=1)
    home: Path = setting("CORRAL_HOME", "~/.corral", _path,
                         "Directory for corral's database, embedded Redis and models")
    models: Path | None = setting("CORRAL_MODELS", None, _path,
                                  "Model store (manifests + blobs); default $CORRAL_HOME/models")
    redis_url: str | None = setting(
        "CORRAL_REDIS_URL", None, str,
        "Redis broker and event bus; unset starts an embedded redis-server under CORRAL_HOME")
    database_url: str | None = setting(
        "CORRAL_DATABASE_URL", None, str,
        "SQLAlchemy URL of the job history; unset is SQLite at $CORRAL_HOME/corral.db")
    keep_alive: float = setting(
        "CORRAL_KEEP_ALIVE", "5m", parse_keep_alive,
        "How long a model stays loaded after its last request (duration, 0, negative=forever)")
    num_parallel: int = setting("CORRAL_NUM_PARALLEL", "4", _positive_int,
                                "Sequences one loaded model decodes together in a worker")
    max_queue: int = setting("CORRAL_MAX_QUEUE", "512", _positive_int,
                             "Interactive requests that may wait before new ones get 503")
    max_loaded_models: int = setting("CORRAL_MAX_LOADED_MODELS", "2", _positive_int,
                                     "Models one worker keeps loaded at once (LRU beyond)")
    origins: tuple[str, ...] = setting("CORRAL_ORIGINS", "", _origins,
                                       "Extra allowed CORS origins, comma separated")
    debug: bool = setting("CORRAL_DEBUG", "false", _parse_bool, "Verbose logging")
    load_timeout: float = setting(
        "CORRAL_LOAD_TIMEOUT", "5m", parse_duration,
        "How long a request waits for a worker to take it and load its model before 503")
    num_ctx: int = setting("CORRAL_NUM_CTX", "2048", _positive_int,
                           "Default context length of one sequence, in tokens; a worker's KV pool "
                           "holds CORRAL_NUM_PARALLEL times this, and a request's num_ctx may use "
                           "up to all of it (and the model's training context)")
    num_threads: int = setting("CORRAL_NUM_THREADS", "0", _non_negative_int,
                               "Decode threads per model; 0 = this worker's share of its host's "
                               "cores (split among the host's workers)")
    queues: str = setting("CORRAL_QUEUES", "cpu", str,
                          "Queues a worker started by `corral serve` consumes")
    device: str = setting("CORRAL_DEVICE", "cpu", str,
                          "Device label of this worker, recorded in each job row; "
                          "`corral worker --device gpu` also consumes the queue `gpu`")
    gpu_layers: int = setting(
        "CORRAL_GPU_LAYERS", "0", _non_negative_int,
        "Layers of each model a gpu worker offloads to the GPU (llama.cpp's n_gpu_layers; "
        "needs llama-cpp-python built with CUDA, see README)")
    result_ttl: float = setting(
        "CORRAL_RESULT_TTL", "24h", parse_duration,
        "How long a job's events and results stay in Redis (the database keeps history)")
    retention: float = setting(
        "CORRAL_RETENTION", "0", _retention,
        "How long finished jobs stay in the database (e.g. 30d, 720h); older ones are "
        "deleted once `corral report` has rolled them up, so it keeps their figures. "
        "0 keeps them all")
    registry_mirrors: tuple[tuple[str, str], ...] = setting(
        "CORRAL_REGISTRY_MIRRORS", "", _mirrors,
        "Registry hosts pulled from another base URL: host=url,... "
        "(e.g. registry.ollama.ai=http://mirror:5000)")
    hf_endpoint: str = setting("CORRAL_HF_ENDPOINT", "https://huggingface.co", _base_url,
                               "Hugging Face Hub address used for hf.co/<user>/<repo> pulls")
    batch_window: int = setting(
        "CORRAL_BATCH_WINDOW", "64", _positive_int,
        "Lines of one batch queued or running at once; the rest wait in the database")
    max_upload: int = setting("CORRAL_MAX_UPLOAD", "200MB", _size,
                              "Largest batch file /v1/files and /batches accept (larger is 413)")
    max_request_bytes: int = setting(
        "CORRAL_MAX_REQUEST_BYTES", "32MB", _size,
        "Largest JSON request body read (larger is 413); room for base64 images in a chat")
    stream_interval: float = setting(
        "CORRAL_STREAM_INTERVAL", "40ms", _interval,
        "Shortest time between two streamed chunks of one interactive job (batch lines: "
        "that times the sequences running, at least 1 s); the first token leaves at once, "
        "later tokens are joined (0 = one chunk per token)")
    lease: float = setting(
        "CORRAL_LEASE", "15s", _positive_duration,
        "How long a worker's hold on a running job lasts unrenewed; after it, the job goes "
        "to a live worker")
    http_threads: int = setting(
        "CORRAL_HTTP_THREADS", "512", _positive_int,
        "Requests the API serves at once; each open stream holds one until it ends")
    max_attempts: int = setting(
        "CORRAL_MAX_ATTEMPTS", "3", _positive_int,
        "Times a job may be taken by a worker (and lost) before it fails")
    auth: str = setting(
        "CORRAL_AUTH", "", _auth,
        "'required': every request needs an API key (corral keys create); unset, keys are "
        "needed only when the API listens beyond loopback")
    api_key: str = setting(
        "CORRAL_API_KEY", "", str,
        "The key the corral CLI sends to the service (Authorization: Bearer)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every CORRAL_* variable; raise SettingsError naming the first bad one."""
        env = os.environ if environ is None else environ
        values = {v.name: v.read(env) for v in _variables(cls)}  # each parsed once, in order
        fields = {}
        for f in _declared(cls):
            variable, part = f.metadata[_VARIABLE_KEY], f.metadata[_PART_KEY]
            fields[f.name] = _pick(values[variable.name], part)
        return cls(**fields)

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


def _declared(cls: type[Settings]) -> list[dataclasses.Field[Any]]:
    """The fields of `cls` that an environment variable fills."""
    return [f for f in dataclasses.fields(cls) if _VARIABLE_KEY in f.metadata]


def _variables(cls: type[Settings]) -> tuple[Variable, ...]:
    """Each variable once, in field order; one name declared twice is a mistake, so refuse it."""
    seen: dict[str, Variable] = {}
    for f in _declared(cls):
        variable = f.metadata[_VARIABLE_KEY]
        if seen.setdefault(variable.name, variable) is not variable:
            raise TypeError(f"{variable.name} is declared by two Settings fields")
    return tuple(seen.values())


VARIABLES: tuple[Variable, ...] = _variables(Settings)


def describe(environ: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """Return (name, current value, description) for every variable, for `corral env`."""
    env = os.environ if environ is None else environ
    return [(v.name, env.get(v.name, v.default or ""), v.description) for v in VARIABLES]


def safe_url(url: str) -> str:
    """A database or Redis URL without its password, for logs and messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
