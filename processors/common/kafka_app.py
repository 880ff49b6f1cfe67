"""The thin Kafka adapter every processor runs in: consume, call the pure core, produce, dead-letter, commit."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from pydantic import BaseModel, ValidationError

from infra.kafka import TopicAdmin, consumer_config, new_producer
from infra.logging import TRACE_FIELDS, log_context, log_scope
from infra.process_resources import gpu_status
from infra.settings import Settings
from processors.common import metrics
from processors.common.batching import BatchRunner, Shared, run_shared
from processors.common.broadcast import BroadcastListener
from processors.common.offsets import CommitPoints
from processors.common.scheduling import LaneScheduler
from schemas.dlq import DeadLetter
from schemas.status import ServiceStatus

log = logging.getLogger(__name__)


class InvalidMessage(ValueError):
    """The message can never be processed (bad JSON, wrong schema): it goes to the dead-letter topic."""


def parse_message[M: BaseModel](model: type[M], value: bytes, what: str) -> M:
    """``value`` as a ``model`` message, or InvalidMessage naming ``what`` it should be and its first problem."""
    try:
        return model.model_validate_json(value)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "message"
        raise InvalidMessage(f"not a valid {what} message: {where}: {problem['msg']}") from None


@dataclass(frozen=True)
class Inbound:
    """A consumed message as a handler sees it."""

    key: bytes | None
    value: bytes
    # This worker took the partition over while the message was waiting: a previous owner may have
    # half-handled it (and written some of its outputs) before it crashed.
    recovering: bool = False


@dataclass(frozen=True)
class Outgoing:
    """A message a handler produces; a session topic it names is created by the app before the first write."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]] = field(default_factory=list)
    # When the handler's next output for this key must be out (time.perf_counter()), if it knows: a lip-sync
    # chunk's next must reach the client before this one has played (processors/common/scheduling.py).
    due: float | None = None


# A handler yields its outputs; a lip-sync handler also yields a Shared piece (a render) before a chunk, which the
# app runs in one batch with other lanes' and whose result the handler then reads (processors/common/batching.py).
Handler = Callable[[Inbound], Iterable[Outgoing | Shared]]
# Extra ServiceStatus fields a processor reports in each heartbeat (e.g. its avatar cache's statistics).
StatusFields = Callable[[], dict[str, Any]]
# A partition with this many messages accepted and not finished is paused until half of them are, so a
# worker never holds more than a bounded amount of consumed work (the broker keeps the rest).
MAX_OPEN_PER_PARTITION = 16
# A new message's first output is due this long after it is accepted: past it, it goes before lanes that are
# merely busy, so new work cannot wait for ever behind sessions that are always due.
FIRST_OUTPUT_BUDGET_S = 0.5
# A shared step takes in the lanes due within this: about a chunk's playing time, so on a busy GPU every session's
# next chunk joins one call, while a lane due later waits for a later step.
DEFAULT_BATCH_HORIZON_S = 0.5
STEP_COST_WEIGHT = 0.1  # of the newest step in the running mean: about the last ten steps count
# The processors whose models GPU_MEMORY_LIMIT is for: they report whether they run on the GPU (for /ready).
GPU_SERVICES = frozenset({"lipsync"})
Lane = tuple[int, bytes | None]  # partition and key: one session's messages, handled one after another


class StepCost:
    """Running mean of the seconds one output takes, for the scheduler's deadline check."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def add(self, elapsed: float, outputs: int) -> float:
        per_output = elapsed / max(outputs, 1)
        self.seconds = per_output if self.seconds == 0.0 else (
            (1 - STEP_COST_WEIGHT) * self.seconds + STEP_COST_WEIGHT * per_output)
        return self.seconds


def _lane(message: Message) -> Lane:
    return message.partition() or 0, message.key()


@dataclass
class _Job:
    """One consumed message on its way through the handler."""

    message: Message
    trace: dict[str, str]  # the log context (request and session ids), kept between steps
    recovering: bool
    outputs: Iterator[Outgoing | Shared] | None = None  # the handler's, once started
    started_at: float = 0.0  # when its first step began (waiting behind its partition's others is not handling)


class KafkaApp:
    """Runs one handler over one input topic in a consumer group, at-least-once.

    Outputs are produced as the handler yields them (so a chunk leaves as soon as it is rendered); an input
    offset is committed only once every output of it and of the messages before it is acknowledged by the
    broker. Messages with one key (a session) are handled one after another; different keys take turns, one
    output at a time (processors/common/scheduling.py), so no session waits for another's long sentence.
    """

    def __init__(self, settings: Settings, *, name: str, input_topic: str, handler: Handler,
                 admin: TopicAdmin | None = None, engine: str | None = None,
                 status_fields: StatusFields | None = None, batch: BatchRunner | None = None, max_batch: int = 1,
                 batch_horizon_s: float = DEFAULT_BATCH_HORIZON_S, background: bool = False) -> None:
        """``batch`` runs the Shared pieces the handler yields, up to ``max_batch`` in size per call (1: none
        shared across lanes). ``background``: its messages can wait a little (infra.kafka.consumer_config)."""
        self.settings = settings
        self.name = name
        self.input_topic = input_topic
        self.handler = handler
        self.admin = admin or TopicAdmin(settings)
        self.producer: Producer = new_producer(settings)
        self.consumer = Consumer(consumer_config(settings, group_id=f"avatar-{name}", background=background))
        self._stop = threading.Event()
        self.assigned = threading.Event()
        self._taken_over: dict[int, int] = {}  # partition → when this worker got it (epoch ms)
        self.processed = 0
        self.dead_lettered = 0
        self.engine = engine
        self.status_fields = status_fields
        self.batch = batch
        self.max_batch = max_batch
        self.batch_horizon_s = batch_horizon_s
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self._last_heartbeat = 0.0
        self._jobs: LaneScheduler[Lane, _Job] = LaneScheduler()
        self._step_cost = StepCost()
        self._commits = CommitPoints()
        self._paused: set[int] = set()

    def run(self) -> None:
        """Consume until stop() is called; the messages in progress are finished first."""
        self.consumer.subscribe([self.input_topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not self._stop.is_set():
                self._heartbeat()
                message = self.consumer.poll(0 if self._jobs.busy else 0.1)
                if message is not None:
                    self._accept(message)
                self._step()
            self._jobs.discard_waiting()  # not started: their offsets stay uncommitted for the next owner
            while self._jobs.busy:
                self._step()
        finally:
            self._announce(ready=False)
            self.producer.flush(10)
            self.consumer.close()

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=f"kafka-app-{self.name}", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _on_revoke(self, consumer: Consumer, partitions: list) -> None:
        """Another worker takes these over from the committed offsets: finish what is in progress (a half-rendered
        segment would otherwise look done to this worker if the partition came back), leave the rest."""
        revoked = {p.partition for p in partitions}
        left = self._jobs.discard_waiting(lambda lane: lane[0] in revoked)
        while self._jobs.has_active(lambda lane: lane[0] in revoked):
            self._step()
        self._commits.forget(list(revoked))
        self._paused.difference_update(revoked)
        if left:
            log.info("revoked partitions' waiting work handed over", extra={"processor": self.name,
                                                                           "messages": len(left)})

    def _on_assign(self, consumer: Consumer, partitions: list) -> None:
        now_ms = int(time.time() * 1000)
        self._taken_over = {p.partition: now_ms for p in partitions}
        self.assigned.set()
        log.info("partitions assigned", extra={"processor": self.name, "partitions": [p.partition for p in partitions]})

    def keep_alive(self) -> None:
        """For a handler busy for long within one step (a registration's analysis): send a heartbeat if one is due,
        so gateways keep counting this processor as ready."""
        self._heartbeat()

    def _heartbeat(self) -> None:
        """Tell the gateways this processor serves, once its partitions are assigned."""
        if self.assigned.is_set() and time.monotonic() - self._last_heartbeat >= self.settings.heartbeat_interval_s:
            self._last_heartbeat = time.monotonic()
            self._announce(ready=True)

    def _announce(self, ready: bool) -> None:
        extra = self.status_fields() if self.status_fields is not None else {}
        gpu = gpu_status(configured=self.settings.gpu_memory_limit > 0) if self.name in GPU_SERVICES else None
        status = ServiceStatus(service=self.name, instance=self.instance, engine=self.engine, ready=ready,
                               ts_ms=int(time.time() * 1000), metrics=metrics.snapshot(), gpu=gpu, **extra)
        self._produce(Outgoing(self.settings.kafka_status_topic, self.name.encode(),
                               status.model_dump_json().encode()))

    def _is_possibly_half_handled(self, message: Message) -> bool:
        """A message produced before this worker got its partition may have been half-handled by the previous
        owner (sessions take turns, so several may be in progress at once); one produced after cannot."""
        taken_over = self._taken_over.get(message.partition() or 0)
        _kind, produced_ms = message.timestamp()
        return taken_over is not None and produced_ms < taken_over

    def _accept(self, message: Message) -> None:
        """Queue a consumed message behind its partition's others."""
        error = message.error()
        if error is not None:
            self._log_consumer_error(error)
            return
        partition = message.partition() or 0
        _kind, produced_ms = message.timestamp()
        if produced_ms > 0:
            metrics.QUEUE_LAG_SECONDS.labels(self.name).observe(max(0.0, time.time() - produced_ms / 1000))
        headers = message.headers() or []
        pairs = headers.items() if isinstance(headers, dict) else headers
        trace = {name: raw.decode(errors="replace") for name, raw in pairs
                 if name in TRACE_FIELDS and isinstance(raw, bytes)}
        self._commits.accepted(partition, message.offset() or 0)
        self._jobs.add(_lane(message), _Job(message, trace, self._is_possibly_half_handled(message)),
                       due=time.perf_counter() + FIRST_OUTPUT_BUDGET_S)
        if self._commits.open_count(partition) >= MAX_OPEN_PER_PARTITION:
            self.consumer.pause([TopicPartition(self.input_topic, partition)])
            self._paused.add(partition)

    def _step(self) -> None:
        """Advance the next job by one output; finish it when the handler has no more.

        A job that yields a ``Shared`` piece (a render) is joined by the pieces of the other started lanes due
        within ``batch_horizon_s``, earliest first, up to ``max_batch``; one runner call serves them all and each
        then produces its output. New work's first step is never batched: it must not wait for other lanes."""
        now = time.perf_counter()
        job = self._jobs.next(now)
        if job is None:
            return
        starting = job.outputs is None
        piece = self._run(job, share=True)
        if piece is None:
            self._jobs.set_step_cost(self._step_cost.add(time.perf_counter() - now, outputs=1))
            return
        batch = [(job, piece)]
        if not starting:
            batch += self._companions(job, self.max_batch - piece.size, now)
        self._run_batch([member for _, member in batch])
        for member, _ in batch:
            self._run(member, share=False)
        self._jobs.set_step_cost(self._step_cost.add(time.perf_counter() - now, outputs=len(batch)))

    def _companions(self, primary: _Job, room: int, now: float) -> list[tuple[_Job, Shared]]:
        """Pieces of other due lanes to run with ``primary``'s: while there is room (the last may overfill it)."""
        found: list[tuple[_Job, Shared]] = []
        for job in self._jobs.due_by(now + self.batch_horizon_s, besides=_lane(primary.message)):
            if room <= 0:
                break
            self._jobs.had_turn(_lane(job.message))
            piece = self._run(job, share=True)
            if piece is not None:
                found.append((job, piece))
                room -= piece.size
        return found

    def _run_batch(self, pieces: list[Shared]) -> None:
        if self.batch is None:
            for piece in pieces:
                piece.fail(TypeError(f"{self.name}: a handler yielded a Shared piece but the app has no batch runner"))
            return
        started = time.perf_counter()
        run_shared(self.batch, pieces)
        metrics.BATCH_PIECES.labels(self.name).observe(len(pieces))
        metrics.BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - started)

    def _run(self, job: _Job, *, share: bool) -> Shared | None:
        """Advance ``job`` to its next output (produced) or, with ``share``, to a Shared piece (returned); a piece
        met without ``share`` is run on its own. The job is finished here when the handler is done."""
        with log_scope(**job.trace):
            while True:
                advanced = self._advance(job)
                if not isinstance(advanced, Shared):
                    break
                if share:
                    job.trace = log_context()
                    return advanced
                self._run_batch([advanced])
            job.trace = log_context()  # ids the handler bound (e.g. once it parsed the message) stay bound
        if advanced is not None:
            self._finish(job, advanced)
        return None

    def _advance(self, job: _Job) -> str | Shared | None:
        """Produce the handler's next output: None while there are more; a Shared piece the handler waits on; the
        outcome once it is done."""
        message = job.message
        try:
            if job.outputs is None:
                job.started_at = time.perf_counter()
                job.outputs = iter(self.handler(Inbound(message.key(), message.value() or b"", job.recovering)))
            out = next(job.outputs, None)
            if isinstance(out, Shared):
                return out
            if out is not None:
                self._ensure_session_topic(out.topic)
        except InvalidMessage as error:
            self._dead_letter(message, str(error))
            return "dead_letter"
        except Exception as error:  # a bug or an engine failure must not stop the other sessions
            log.exception("processing failed", extra={"processor": self.name, "offset": message.offset()})
            self._dead_letter(message, f"processing failed: {type(error).__name__}: {error}")
            return "failed"
        if out is None:
            return "ok"
        self._produce(out)
        self._jobs.set_due(_lane(message), out.due)
        return None

    def _ensure_session_topic(self, topic: str) -> None:
        """Session topics are made on demand, by the first output to one (known ones cost nothing)."""
        prefix = self.settings.kafka_session_topic_prefix
        if topic.startswith(prefix):
            self.admin.ensure_session_topic(topic.removeprefix(prefix))

    def _finish(self, job: _Job, outcome: str) -> None:
        message = job.message
        partition = message.partition() or 0
        metrics.MESSAGES.labels(self.name, outcome).inc()
        metrics.HANDLE_SECONDS.labels(self.name).observe(time.perf_counter() - job.started_at)
        self.producer.flush(30)
        commit_at = self._commits.finished(partition, message.offset() or 0)
        if commit_at is not None:
            self.consumer.commit(offsets=[TopicPartition(self.input_topic, partition, commit_at)], asynchronous=True)
        self.processed += 1
        self._jobs.finish(_lane(message))
        if partition in self._paused and self._commits.open_count(partition) <= MAX_OPEN_PER_PARTITION // 2:
            self.consumer.resume([TopicPartition(self.input_topic, partition)])
            self._paused.discard(partition)

    def _produce(self, out: Outgoing) -> None:
        headers = list(out.headers) + [(name, value.encode()) for name, value in log_context().items()
                                       if name in TRACE_FIELDS and all(name != h for h, _ in out.headers)]
        while True:
            try:
                self.producer.produce(out.topic, out.value, key=out.key, headers=headers or None)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self.producer.poll(0.05)
        self.producer.poll(0)

    def _dead_letter(self, message: Message, reason: str) -> None:
        letter = DeadLetter(reason=reason, processor=self.name, source_topic=message.topic() or "",
                            source_partition=message.partition() or 0, source_offset=message.offset() or 0,
                            key=message.key(), value=message.value() or b"")
        self.producer.produce(self.settings.kafka_dlq_topic, letter.value, key=letter.key,
                              headers=list(letter.headers()))
        self.dead_lettered += 1
        log.warning("message dead-lettered", extra={"processor": self.name, "reason": reason[:500]})

    def _log_consumer_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        log.warning("consumer error", extra={"processor": self.name, "error": str(error)})
        if error.fatal():
            raise RuntimeError(f"fatal Kafka error in {self.name}: {error}")
        time.sleep(0.1)


def run_until_stopped(app: KafkaApp, listeners: Iterable[BroadcastListener | None] = ()) -> None:
    """Serve until SIGTERM or Ctrl-C; the message in hand is finished first, then the listeners stop."""
    signal.signal(signal.SIGTERM, lambda *_: app.stop())
    try:
        app.run()
    except KeyboardInterrupt:
        app.stop()
    finally:
        for listener in listeners:
            if listener is not None:
                listener.stop()
