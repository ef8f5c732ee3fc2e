"""An example Crashray detector: a project minute with ``threshold`` events or more."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import ClassVar

from events.anomaly import Anomaly, Series


class MinuteThresholdDetector:
    name: ClassVar[str] = "minute-threshold"
    num_cpus: ClassVar[float] = 0.01  # Ray resources, like any actor's

    def __init__(self, threshold: int = 5) -> None:
        self.threshold = threshold
        self.minutes_seen = 0  # state that survives a restart through checkpoint()

    def observe(self, batch: Sequence[Series], now: dt.datetime) -> list[Anomaly]:
        found = []
        for s in (s for s in batch if s.scope == "project"):
            self.minutes_seen += len(s.minutes)
            for minute, events in zip(s.minutes, s.events, strict=True):
                if events >= self.threshold:
                    found.append(Anomaly(
                        "project", s.organization_id, s.project_id, None, minute,
                        minute + dt.timedelta(minutes=1), events / self.threshold, "up",
                        f"{events} events in the minute from {minute:%H:%M} UTC.",
                        {"events": float(events), "threshold": float(self.threshold)},
                        kind="busy-minute"))
        return found

    def checkpoint(self) -> bytes:
        return str(self.minutes_seen).encode()

    def restore(self, state: bytes) -> None:
        self.minutes_seen = int(state)
