"""Schema of ``avatar.dlq``: the original message bytes untouched, with why and where in the headers."""

from __future__ import annotations

from dataclasses import dataclass

REASON = "dlq.reason"
SOURCE_TOPIC = "dlq.source.topic"
SOURCE_PARTITION = "dlq.source.partition"
SOURCE_OFFSET = "dlq.source.offset"
PROCESSOR = "dlq.processor"


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    processor: str
    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        return [
            (REASON, self.reason.encode()),
            (PROCESSOR, self.processor.encode()),
            (SOURCE_TOPIC, self.source_topic.encode()),
            (SOURCE_PARTITION, str(self.source_partition).encode()),
            (SOURCE_OFFSET, str(self.source_offset).encode()),
        ]

    @classmethod
    def from_headers(cls, key: bytes | None, value: bytes | None,
                     headers: list[tuple[str, str | bytes | None]] | dict[str, str | bytes | None]) -> DeadLetter:
        pairs = headers.items() if isinstance(headers, dict) else headers
        found = {name: raw.decode() if isinstance(raw, bytes) else str(raw) for name, raw in pairs}
        return cls(found[REASON], found[PROCESSOR], found[SOURCE_TOPIC], int(found[SOURCE_PARTITION]),
                   int(found[SOURCE_OFFSET]), key, value or b"")
