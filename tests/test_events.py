"""The event protocol on a real redis-server: order, replay, late subscribers, resume, expiry."""

import threading
import time

import pytest
import redis

from service.jobs.events import Publisher, Subscriber, log_key


@pytest.fixture
def r(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_late_subscriber_gets_every_event_once(r):
    pub = Publisher(r, "job1", ttl_seconds=60)
    for i in range(5):
        pub.emit("token", text=f"t{i}")
    received = []

    def listen():
        for event in Subscriber(r, "job1").follow(idle_timeout=10):
            received.append(event)

    listener = threading.Thread(target=listen)
    listener.start()
    time.sleep(0.2)
    for i in range(5, 10):
        pub.emit("token", text=f"t{i}")
    pub.emit("done", eval_count=10)
    listener.join(10)
    texts = [e.data["text"] for e in received if e.type == "token"]
    assert texts == [f"t{i}" for i in range(10)]
    assert received[-1].type == "done" and received[-1].data["eval_count"] == 10


def test_resume_after_an_event_id_skips_what_was_seen(r):
    pub = Publisher(r, "job2", ttl_seconds=60)
    ids = [pub.emit("token", text=str(i)) for i in range(4)]
    pub.emit("done")
    events = list(Subscriber(r, "job2").follow(after=ids[1], idle_timeout=5))
    assert [e.data.get("text") for e in events] == ["2", "3", None]


def test_follow_times_out_when_nothing_arrives(r):
    with pytest.raises(TimeoutError):
        list(Subscriber(r, "nobody").follow(idle_timeout=0.3))


def test_event_log_expires(r):
    Publisher(r, "job3", ttl_seconds=60).emit("token", text="x")
    ttl = r.pttl(log_key("job3"))
    assert 0 < ttl <= 60_000
