"""Clears the lip-sync avatar caches and deletes orphaned session topics; --dry-run only says what it would do.

    .venv/bin/python scripts/cleanup_resources.py --dry-run               # both, listed only
    .venv/bin/python scripts/cleanup_resources.py --clear-avatar-cache    # every lip-sync instance reloads avatars
    .venv/bin/python scripts/cleanup_resources.py --orphaned-topics       # delete topics of ended/abandoned sessions

With neither flag it does both. The avatar cache lives in each running lip-sync process's memory, so it is cleared
the way a re-registration clears it: one avatar.invalidations message per avatar, which every instance obeys.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file: the repository's packages

import psycopg

from infra.kafka import TopicAdmin, new_producer
from infra.settings import Settings, load_settings
from schemas.avatar_events import AvatarInvalidated


@dataclass(frozen=True)
class TopicVerdict:
    topic: str
    orphaned: bool
    reason: str


def avatar_ids(settings: Settings) -> list[str]:
    with psycopg.connect(settings.database_url, connect_timeout=5) as conn:
        return [row[0] for row in conn.execute("SELECT avatar_id FROM avatars ORDER BY avatar_id")]


def clear_avatar_cache(settings: Settings, *, dry_run: bool) -> list[str]:
    """Tell every lip-sync instance to drop each avatar (it reloads from PostgreSQL on next use)."""
    ids = avatar_ids(settings)
    if dry_run or not ids:
        return ids
    producer = new_producer(settings)
    now_ms = int(time.time() * 1000)
    for avatar_id in ids:
        event = AvatarInvalidated(avatar_id=avatar_id, reason="replaced", ts_ms=now_ms)
        producer.produce(settings.kafka_avatar_invalidation_topic, key=avatar_id.encode(), value=event.to_kafka())
    if producer.flush(15) != 0:
        raise RuntimeError("the broker did not acknowledge every invalidation within 15 s")
    return ids


def judge_topic(topic: str, row: tuple[datetime, datetime | None] | None, idle_ttl_s: float,
                now: datetime) -> TopicVerdict:
    """Orphaned: its session ended, or no gateway ended it long after its idle TTL. A topic with no session row is
    kept: other systems produce straight into Kafka with session ids of their own (README), never stored."""
    if row is None:
        return TopicVerdict(topic, False, "kept: no session row (a session of another system?)")
    last_active, ended = row
    if ended is not None:
        return TopicVerdict(topic, True, f"session ended at {ended:%Y-%m-%d %H:%M:%S}")
    idle_s = (now - last_active).total_seconds()
    if idle_s > 2 * idle_ttl_s:  # the gateway ends sessions at the TTL; twice that, none is left to do it
        return TopicVerdict(topic, True, f"idle {idle_s:.0f} s, over twice SESSION_IDLE_TTL_S: abandoned")
    return TopicVerdict(topic, False, f"kept: active {idle_s:.0f} s ago")


def session_topics(settings: Settings, admin: TopicAdmin) -> list[str]:
    topics = admin.client.list_topics(timeout=10).topics
    return sorted(name for name in topics if name.startswith(settings.kafka_session_topic_prefix))


def orphaned_topics(settings: Settings, *, dry_run: bool) -> list[TopicVerdict]:
    admin = TopicAdmin(settings)
    topics = session_topics(settings, admin)
    prefix = settings.kafka_session_topic_prefix
    ids = [topic[len(prefix):] for topic in topics]
    with psycopg.connect(settings.database_url, connect_timeout=5) as conn:
        rows = {row[0]: (row[1], row[2]) for row in conn.execute(
            "SELECT session_id, last_active_at, ended_at FROM sessions WHERE session_id = ANY(%s)", (ids,))}
        now = conn.execute("SELECT now()").fetchone()
    clock = now[0] if now else datetime.now(UTC)
    verdicts = [judge_topic(topic, rows.get(sid), settings.session_idle_ttl_s, clock) for topic, sid in zip(
        topics, ids, strict=True)]
    doomed = [v.topic for v in verdicts if v.orphaned]
    if doomed and not dry_run:
        admin.delete(doomed)
        abandoned = [topic[len(prefix):] for topic in doomed]
        with psycopg.connect(settings.database_url, connect_timeout=5) as conn:
            # so a late resume hears session_ended instead of waiting on a deleted topic
            conn.execute("UPDATE sessions SET ended_at = now() WHERE ended_at IS NULL AND session_id = ANY(%s)",
                         (abandoned,))
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clear-avatar-cache", action="store_true", help="every lip-sync instance drops its avatars")
    parser.add_argument("--orphaned-topics", action="store_true", help="delete the topics of ended/abandoned sessions")
    parser.add_argument("--dry-run", action="store_true", help="change nothing: list what would be done")
    args = parser.parse_args(argv)
    both = not (args.clear_avatar_cache or args.orphaned_topics)
    settings = load_settings()
    if not settings.kafka_bootstrap_servers:  # the embedded broker make run starts
        settings = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{settings.embedded_kafka_port}"})
    verb = "would" if args.dry_run else "did"
    try:
        if args.clear_avatar_cache or both:
            ids = clear_avatar_cache(settings, dry_run=args.dry_run)
            print(f"avatar cache: {verb} invalidate {len(ids)} avatar(s) on every lip-sync instance"
                  + (f": {', '.join(ids)}" if ids else ""))
        if args.orphaned_topics or both:
            verdicts = orphaned_topics(settings, dry_run=args.dry_run)
            doomed = [v for v in verdicts if v.orphaned]
            print(f"session topics: {len(verdicts)} found, {verb} delete {len(doomed)}")
            for verdict in verdicts:
                print(f"  {verdict.topic}  {'delete' if verdict.orphaned else 'keep  '}  {verdict.reason}")
    except psycopg.OperationalError as error:
        print(f"error: cannot reach PostgreSQL at DATABASE_URL: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except Exception as error:  # the broker's errors come as KafkaException/RuntimeError; one line says which
        print(f"error: {type(error).__name__}: {error} (is the broker at KAFKA_BOOTSTRAP_SERVERS up?)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
