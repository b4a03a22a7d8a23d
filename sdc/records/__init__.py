"""The one interchange format: chip, sweep, probe_result, job_event, verdict, quarantine_event.

Records travel as JSON lines naming their type in ``"record"``; ``types`` declares them and
their field types once, ``validation`` checks decoded JSON against that declaration (msgspec)
and adds the string rules of ingest, ``schema`` writes it as the JSON Schema files in ``docs/schema/``
(``python -m sdc.records --write-schemas docs/schema``).
"""

from sdc.records.types import (
    BY_KIND,
    CHIP_STATES,
    DIAGNOSES,
    INT32,
    INT64,
    INT64_FIELDS,
    MAX_LENGTH,
    RECORD_TYPES,
    RESULT_STATUSES,
    SAFE_ID_CHARACTERS,
    SCHEMA_VERSION,
    SEVERITIES,
    SWEEP_STATUSES,
    VERDICT_KINDS,
    WRITE_ORDER,
    Chip,
    JobEvent,
    ProbeResult,
    QuarantineEvent,
    Record,
    RecordError,
    Sweep,
    Verdict,
    canonical_json,
    format_time,
    new_id,
    parse_time,
    stack_hash,
    utcnow,
)
from sdc.records.validation import (
    ENVELOPE,
    FREE_TEXT_FIELDS,
    FUTURE_SKEW,
    SAFE_ID_FIELDS,
    as_record,
    check_record,
    from_json,
    from_json_dict,
    loads,
    validate_json_dict,
    validate_line,
)

# Severity order of verdicts, lowest first: the one ranking every reader uses.
SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}

__all__ = [
    "BY_KIND", "CHIP_STATES", "DIAGNOSES", "ENVELOPE", "INT32", "INT64", "INT64_FIELDS", "MAX_LENGTH",
    "RECORD_TYPES", "RESULT_STATUSES", "SCHEMA_VERSION", "SEVERITIES", "SEVERITY_RANK", "SWEEP_STATUSES",
    "VERDICT_KINDS", "WRITE_ORDER", "Chip", "JobEvent", "ProbeResult", "QuarantineEvent", "Record",
    "RecordError", "Sweep", "Verdict", "FREE_TEXT_FIELDS", "FUTURE_SKEW", "SAFE_ID_CHARACTERS",
    "SAFE_ID_FIELDS", "canonical_json", "check_record", "format_time", "from_json", "from_json_dict",
    "loads", "new_id", "parse_time", "stack_hash", "utcnow", "validate_json_dict", "validate_line", "as_record",
]
