"""A project's settings as Sentry's project endpoint shows and takes them (pure: the body
model validates at the HTTP edge, storage/projects.py stores).

Settings: ``name``, ``platform``; grouping — ``groupingConfig`` (a Crashray grouping
version), ``groupingAutoUpdate``, ``fingerprintingRules`` and ``groupingEnhancements``
(Sentry's rule languages, a syntax error names the line and column; each text is held to the
limits of ``events.grouping.fingerprint_rules``: ``MAX_RULES`` rules of ``MAX_RULE_CHARS``
characters, ``MAX_RULES_BYTES`` in all, ``MAX_GLOB_WILDCARDS`` a glob); data scrubbing —
``dataScrubber``, ``dataScrubberDefaults``, ``scrubIPAddresses``, ``sensitiveFields``,
``safeFields`` (relay-pii's legacy options); ``spikeProtection`` ``{"enabled",
"multiplier", "floorPerHour"}``; source fetching — ``allowedDomains`` (hosts, ``*.example.com``
or ``*``; events/source_fetch.py's syntax and limits) and ``scrapeJavaScript``, both off by
default (Sentry's defaults are ``["*"]`` and true): fetching needs both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field, StringConstraints, field_validator

from events.grouping import GROUPING_CONFIGS
from events.grouping.fingerprint_rules import RuleSyntaxError, parse_fingerprint_rules
from events.grouping.stacktrace_rules import parse_stacktrace_rules
from events.quotas import SpikeProtection
from events.source_fetch import parse_domains
from serve_apps.api.shapes import Body, iso
from storage.projects import ProjectSettings, ProjectUpdate, SpikeUpdate

Text = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")]
FieldName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")]


class SpikeProtectionBody(Body):
    enabled: bool | None = None
    multiplier: Annotated[float, Field(gt=0)] | None = None
    floorPerHour: Annotated[int, Field(ge=0)] | None = None


class ProjectSettingsBody(Body):
    name: Text | None = None
    platform: Text | None = None
    fingerprintingRules: str | None = None
    groupingEnhancements: str | None = None
    groupingConfig: str | None = None
    groupingAutoUpdate: bool | None = None
    dataScrubber: bool | None = None
    dataScrubberDefaults: bool | None = None
    scrubIPAddresses: bool | None = None
    sensitiveFields: list[FieldName] | None = None
    safeFields: list[FieldName] | None = None
    spikeProtection: SpikeProtectionBody | None = None
    allowedDomains: list[str] | None = None
    scrapeJavaScript: bool | None = None

    @field_validator("allowedDomains")
    @classmethod
    def _domain_patterns(cls, domains: list[str] | None) -> list[str] | None:
        if domains is None:
            return None
        parse_domains(domains)  # ValueError naming the pattern and the syntax
        return [d.strip().lower() for d in domains]

    @field_validator("fingerprintingRules")
    @classmethod
    def _fingerprint_rules_parse(cls, rules: str | None) -> str | None:
        if rules is not None:
            _parses(parse_fingerprint_rules, rules)
        return rules

    @field_validator("groupingEnhancements")
    @classmethod
    def _stacktrace_rules_parse(cls, rules: str | None) -> str | None:
        if rules is not None:
            _parses(parse_stacktrace_rules, rules)
        return rules

    @field_validator("groupingConfig")
    @classmethod
    def _known_grouping_config(cls, config: str | None) -> str | None:
        if config is not None and config not in GROUPING_CONFIGS:
            raise ValueError(f"{config!r} is not a grouping version; known:"
                             f" {', '.join(GROUPING_CONFIGS)}")
        return config

    def update(self, current_spike: SpikeProtection) -> ProjectUpdate:
        """The change to store; spike protection's ``enabled`` defaults to the current one."""
        spike = None
        if self.spikeProtection is not None:
            s = self.spikeProtection
            spike = SpikeUpdate(current_spike.enabled if s.enabled is None else s.enabled,
                                s.multiplier, s.floorPerHour)
        return ProjectUpdate(
            name=_stripped(self.name), platform=_stripped(self.platform),
            fingerprinting_rules=self.fingerprintingRules,
            grouping_enhancements=self.groupingEnhancements,
            scrub_data=self.dataScrubber, scrub_defaults=self.dataScrubberDefaults,
            scrub_ip_addresses=self.scrubIPAddresses,
            sensitive_fields=_fields(self.sensitiveFields),
            safe_fields=_fields(self.safeFields), grouping_config=self.groupingConfig,
            grouping_auto_update=self.groupingAutoUpdate, spike=spike,
            allowed_domains=None if self.allowedDomains is None else tuple(self.allowedDomains),
            scrape_javascript=self.scrapeJavaScript)


def _parses(parse: Callable[[str], object], rules: str) -> None:
    """Rules that do not parse, or are over a limit, fail validation of their field; the
    message names the line and column (RuleSyntaxError). The parsers apply the limits, so the
    consumers and ``crashray grouping hash`` accept exactly what is saved here."""
    try:
        parse(rules)
    except RuleSyntaxError as exc:
        raise ValueError(str(exc)) from exc


def _stripped(value: str | None) -> str | None:
    return None if value is None else value.strip()


def _fields(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(v.strip() for v in values)


def settings_json(s: ProjectSettings) -> dict[str, Any]:
    grouping = s.grouping
    expiry = grouping.secondary_expiry
    return {"id": str(s.ref.id), "slug": s.ref.slug, "name": s.name,
            "platform": s.platform, "groupingConfig": grouping.config,
            "secondaryGroupingConfig": grouping.secondary_config,
            "secondaryGroupingExpiry": None if expiry is None else int(expiry.timestamp()),
            "groupingAutoUpdate": grouping.auto_update,
            "fingerprintingRules": grouping.fingerprinting_rules,
            "groupingEnhancements": grouping.grouping_enhancements,
            "spikeProtection": {"enabled": s.spike.enabled, "multiplier": s.spike.multiplier,
                                "floorPerHour": s.spike.floor_per_hour},
            "dataScrubber": s.scrub_data, "dataScrubberDefaults": s.scrub_defaults,
            "scrubIPAddresses": s.scrub_ip_addresses,
            "sensitiveFields": list(s.sensitive_fields), "safeFields": list(s.safe_fields),
            "allowedDomains": list(s.allowed_domains), "scrapeJavaScript": s.scrape_javascript,
            "dateCreated": iso(s.date_added),
            "organization": {"slug": s.ref.organization_slug}}
