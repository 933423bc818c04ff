"""Settings: Ollama's defaults and meanings, and bad values named at start-up."""

import pytest

from service.core.errors import SettingsError
from service.core.settings import FOREVER, Settings, describe, parse_duration


def test_defaults_match_ollama():
    s = Settings.from_env({})
    assert (s.host, s.port) == ("127.0.0.1", 11434)
    assert s.keep_alive == 300.0
    assert s.max_queue == 512
    assert s.redis_url is None
    assert s.database.startswith("sqlite:///") and s.database.endswith("corral.db")
    assert s.models_dir == s.home / "models"


def test_home_drives_models_and_database(tmp_path):
    s = Settings.from_env({"CORRAL_HOME": str(tmp_path)})
    assert s.models_dir == tmp_path / "models"
    assert s.database == f"sqlite:///{tmp_path / 'corral.db'}"


@pytest.mark.parametrize(("text", "seconds"), [
    ("5m", 300.0), ("1h30m", 5400.0), ("300", 300.0), ("0", 0.0), ("-1", FOREVER),
    ("-5m", FOREVER), (90, 90.0), ("2.5s", 2.5), ("100ms", 0.1),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("name", "value"), [
    ("CORRAL_KEEP_ALIVE", "soon"),
    ("CORRAL_HOST", "localhost:99999"),
    ("CORRAL_NUM_PARALLEL", "0"),
    ("CORRAL_MAX_QUEUE", "many"),
    ("CORRAL_DEBUG", "maybe"),
    ("CORRAL_STREAM_INTERVAL", "-10ms"),
    ("CORRAL_STREAM_INTERVAL", "soon"),
])
def test_bad_value_names_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(("text", "seconds"), [("25ms", 0.025), ("0", 0.0), ("0.1", 0.1),
                                                ("1s", 1.0)])
def test_stream_interval_is_a_duration_in_seconds(text, seconds):
    assert Settings.from_env({}).stream_interval == pytest.approx(0.05)
    value = Settings.from_env({"CORRAL_STREAM_INTERVAL": text}).stream_interval
    assert value == pytest.approx(seconds)


def test_host_forms():
    assert Settings.from_env({"CORRAL_HOST": "0.0.0.0:8080"}).base_url == "http://127.0.0.1:8080"
    assert Settings.from_env({"CORRAL_HOST": "http://10.1.2.3"}).port == 11434


def test_every_variable_is_described():
    rows = describe({})
    names = {name for name, _, _ in rows}
    assert {"CORRAL_HOST", "CORRAL_HOME", "CORRAL_REDIS_URL", "CORRAL_KEEP_ALIVE"} <= names
    assert all(text for _, _, text in rows)
