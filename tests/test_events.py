"""The event protocol on a real redis-server: order, replay, late subscribers, resume, expiry."""

import pytest
import redis

from service.jobs.events import Publisher, Subscriber, channel, log_key
from tests.waiting import wait_until


@pytest.fixture
def r(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def subscribers(r, job_id: str) -> int:
    """How many clients the server counts on the job's channel."""
    [(_, count)] = r.pubsub_numsub(channel(job_id))
    return count


def test_a_late_subscriber_replays_the_stored_events_then_follows_live_ones(r):
    pub = Publisher(r, "job1", ttl_seconds=60)
    early = [pub.emit("token", text=f"t{i}") for i in range(5)]
    # Published to nobody: these five can reach a subscriber only from the stored log.
    assert subscribers(r, "job1") == 0
    assert [e.id for e in Subscriber(r, "job1").replay()] == early

    events = Subscriber(r, "job1").follow(idle_timeout=5)
    received = [next(events)]  # subscribes, then reads the log: blocks if nothing is replayed
    wait_until(lambda: subscribers(r, "job1"), message="the subscription to reach the server")
    late = [pub.emit("token", text=f"t{i}") for i in range(5, 10)]  # after the log was read
    late.append(pub.emit("done", eval_count=10))
    received += events

    assert [e.id for e in received] == early + late  # every event once, in order
    texts = [e.data["text"] for e in received if e.type == "token"]
    assert texts == [f"t{i}" for i in range(10)]
    assert received[-1].type == "done" and received[-1].data["eval_count"] == 10


def test_events_emitted_while_a_subscriber_starts_reach_it_once(r, monkeypatch):
    """Emitted once the subscriber has subscribed but before it read the log, an event reaches
    it twice (in the log and on the channel); emitted just after it read the log, only on the
    channel. Each is yielded once."""
    pub = Publisher(r, "job4", ttl_seconds=60)
    ids = [pub.emit("token", text="before")]
    replay = Subscriber.replay

    def replay_amid_emits(self, after=None):
        wait_until(lambda: subscribers(r, "job4"), message="a subscription before the replay")
        ids.append(pub.emit("token", text="in both"))
        stored = replay(self, after)
        ids.append(pub.emit("token", text="after the log"))
        return stored

    monkeypatch.setattr(Subscriber, "replay", replay_amid_emits)
    events = Subscriber(r, "job4").follow(idle_timeout=5)
    received = [next(events)]
    ids.append(pub.emit("done"))
    received += events

    assert [e.id for e in received] == ids
    assert [e.data.get("text") for e in received] == ["before", "in both", "after the log", None]


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
