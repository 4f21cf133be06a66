"""Threshold and rate-of-change evaluation on every committed ingest batch, and the set-based alert transitions.

``batch_evaluate`` runs in the ingest process right after each flush commits, on the readings the flush recorded
in its own transaction (``apps.alerts.outbox``, which makes evaluation at least once). It makes ONE pass in Python
over the batch against the cached rules index (apps.alerts.rules_cache) - a dict lookup per reading, no query - and
keeps, per (rule, device), only what the decision needs: the newest reading, and the trailing run of readings
meeting the condition. Then it applies all transitions in ONE transaction with a constant number of set-based
statements, whatever the batch size:

* rate-of-change rules needing history they cannot find in the batch: one LATERAL query for every such series;
* *for* durations: one upsert of ``RuleCondition`` (``holding_since`` kept while the condition holds, reset when a
  reading breaks it), returning since when each condition holds;
* opening: one ``INSERT ... ON CONFLICT`` on the partial unique index ``one_open_alert_per_rule_and_device``, which
  also makes two listeners racing on the same device converge on one open alert (the loser's row becomes an update
  of the winner's: last value, last-triggered time, trigger count);
* clearing: one ``UPDATE ... FROM unnest(...)``; then one INSERT of the ``opened`` / ``cleared`` events;
* escalation: one UPDATE pointing every new alert whose rule has an escalation policy at the policy's first step.

Retriggers write no event: a pump stuck at 85 °C reporting every second would add 86,400 rows a day to a history
an operator reads, all saying the same thing. ``trigger_count`` counts the readings that met the condition (the
trailing run of each batch) and ``last_triggered_at`` / ``last_value`` say when and how bad it last was.

Decisions use each batch's newest reading per (rule, device): a spike that rose and fell within one flush (50 ms to
a second) is not an alert. Out-of-order batches from two listeners are guarded by comparing with the stored
``last_triggered_at`` (an older reading neither retriggers nor clears a newer state).

One rule can never stop another. Bounds on every duration and number of a rule (apps.alerts.models) keep its
arithmetic in range, but a rule that fails anyway (a row stored before the bounds, a value the bounds did not
foresee) must not take the rest of its batch - other sites, other organizations - down with it: an error computing
one rule's decision skips that rule only, and when the set-based transaction fails as a whole, the batch is applied
again rule by rule, each in its own savepoint, so only the failing rule's part is lost. Skipped rules are logged and
counted (``fieldwatch_alert_rule_failures_total``). The normal case keeps its constant number of statements.
"""

import datetime
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg
from django.db import DataError, IntegrityError, OperationalError, connection, transaction

from apps.alerts.choices import AlertEventKind, Operator, RateDirection, RuleKind
from apps.alerts.escalation import escalations_start
from apps.alerts.metrics import RULE_FAILURES
from apps.alerts.rules_cache import CachedRule, RulesIndex
from apps.alerts.signals import alerts_changed_on_commit
from apps.core.time import duration_text
from apps.telemetry.ingest.records import CommittedReading

logger = logging.getLogger(__name__)

DEADLOCK_RETRIES = 3
OPERATOR_SIGNS = {Operator.GT: ">", Operator.GE: "≥", Operator.LT: "<", Operator.LE: "≤"}

# What one rule's values can make fail: Python arithmetic (a datetime out of range, a comparison with a missing
# threshold) and PostgreSQL refusing a value (timestamp out of range, a constraint). Connection losses and deadlocks
# (OperationalError) are not about a rule and propagate.
RULE_ERRORS = (ArithmeticError, TypeError, ValueError, DataError, IntegrityError)


# ---------------------------------------------------------------------------------------------------------------------
# Conditions (pure functions: unit-tested without a database)
# ---------------------------------------------------------------------------------------------------------------------


def threshold_holds(rule: CachedRule, value: float) -> bool:
    op, threshold = rule.operator, rule.threshold
    if op == Operator.GT:
        return value > threshold
    if op == Operator.GE:
        return value >= threshold
    if op == Operator.LT:
        return value < threshold
    if op == Operator.LE:
        return value <= threshold
    if op == Operator.OUTSIDE:
        return value < threshold or value > rule.threshold_high
    return False


def threshold_clears(rule: CachedRule, value: float) -> bool:
    """Whether ``value`` clears an open alert. With hysteresis ('gt 80, clear 75') only past the clear threshold:
    between 75 and 80 the alert stays as it is. Without, as soon as the condition no longer holds."""
    clear = rule.clear_threshold
    if clear is None:
        return not threshold_holds(rule, value)
    if rule.operator in (Operator.GT, Operator.GE):
        return value < clear
    if rule.operator in (Operator.LT, Operator.LE):
        return value > clear
    return not threshold_holds(rule, value)


def rate_holds(rule: CachedRule, change: float) -> bool:
    if rule.rate_direction == RateDirection.RISING:
        return change > rule.rate_delta
    if rule.rate_direction == RateDirection.FALLING:
        return -change > rule.rate_delta
    return abs(change) > rule.rate_delta


# ---------------------------------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------------------------------


def number(value: float) -> str:
    return f"{round(value, 2):g}" if math.isfinite(value) else str(value)


def _with_unit(value: float, unit: str) -> str:
    return f"{number(value)} {unit}" if unit else number(value)


def threshold_message(rule: CachedRule, index: RulesIndex, device_id: int, value: float) -> str:
    """'Supply temp 85.2 °C > 80 on Heat pump A-001 (Site A)'."""
    name, unit = index.metric_label(device_id, rule.metric_key)
    if rule.operator == Operator.OUTSIDE:
        condition = f"outside [{number(rule.threshold)}, {number(rule.threshold_high)}]"
    else:
        condition = f"{OPERATOR_SIGNS.get(rule.operator, rule.operator)} {number(rule.threshold)}"
    held = f" for {duration_text(rule.for_duration)}" if rule.for_duration else ""
    return f"{name} {_with_unit(value, unit)} {condition}{held} on {index.device_label(device_id)}"[:500]


def rate_message(rule: CachedRule, index: RulesIndex, device_id: int, value: float, change: float) -> str:
    """'Supply temp rose 12.5 °C within 5 min (now 85.2 °C) on Heat pump A-001 (Site A)'."""
    name, unit = index.metric_label(device_id, rule.metric_key)
    verb = "rose" if change >= 0 else "fell"
    return (
        f"{name} {verb} {_with_unit(abs(change), unit)} within {duration_text(rule.rate_window)} "
        f"(now {_with_unit(value, unit)}) on {index.device_label(device_id)}"
    )[:500]


def no_data_message(metric_name: str, device_label: str, silence: datetime.timedelta) -> str:
    """'No data from Heat pump A-001 (Site A) for over 5 min' or 'No Supply temp readings from ...'."""
    what = f"No {metric_name} readings" if metric_name else "No data"
    return f"{what} from {device_label} for over {duration_text(silence)}"[:500]


# ---------------------------------------------------------------------------------------------------------------------
# The pass over a batch
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _State:
    """Per (rule, device) while scanning a batch."""

    rule: CachedRule
    series_id: int
    ts: datetime.datetime
    value: float
    run_start: datetime.datetime | None = None  # first reading of the trailing run meeting the condition
    run_count: int = 0
    broken: bool = False  # a reading of this batch broke the condition (the stored holding_since is void)
    history: list[tuple[datetime.datetime, float]] | None = None  # rate rules: the batch's readings


@dataclass(frozen=True, slots=True)
class Opening:
    rule: CachedRule
    device_id: int
    metric_key: str
    message: str
    ts: datetime.datetime
    value: float | None
    count: int = 1


@dataclass(frozen=True, slots=True)
class Clearing:
    rule_id: int
    device_id: int
    ts: datetime.datetime
    value: float | None
    guarded: bool = True  # only if the alert was not triggered later than ts (False for no-data: any reading clears)


@dataclass(slots=True)
class Outcome:
    """What applying a batch did: the alert ids opened and cleared (for tests and logs), and whether a new alert's
    first escalation step is due already (the caller kicks an escalation run)."""

    opened: list[int] = field(default_factory=list)
    retriggered: list[int] = field(default_factory=list)
    cleared: list[int] = field(default_factory=list)
    escalation_due: bool = False

    def add(self, other: "Outcome") -> None:
        self.opened += other.opened
        self.retriggered += other.retriggered
        self.cleared += other.cleared
        self.escalation_due = self.escalation_due or other.escalation_due


def rule_failures_report(failed: dict[int, BaseException], *, stage: str) -> None:
    """Log and count the rules skipped by one pass (``stage``: evaluation or timers)."""
    for rule_id, error in failed.items():
        RULE_FAILURES.labels(stage).inc()
        logger.error("alert rule %s skipped in %s: %r", rule_id, stage, error, exc_info=error)


def rules_isolated(apply, rule_ids: Iterable[int], failed: dict[int, BaseException]) -> "Outcome":
    """``apply(None)`` - everything in one set-based transaction - or, when that fails on a rule's values, ``apply(
    {rule_id})`` for each rule in turn, each in its own transaction (savepoint). A rule that fails alone is recorded
    in ``failed``; the others' transitions are applied."""
    try:
        return apply(None)
    except RULE_ERRORS as error:
        logger.warning("alert transitions failed for the batch as a whole (%r); applying them rule by rule", error)
    outcome = Outcome()
    for rule_id in sorted(set(rule_ids)):
        try:
            outcome.add(apply({rule_id}))
        except RULE_ERRORS as error:
            failed[rule_id] = error
    return outcome


def batch_evaluate(readings: Iterable[CommittedReading], *, index: RulesIndex) -> Outcome:
    """Evaluate ``readings`` against ``index`` and apply the resulting transitions in one transaction."""
    metric_rules = index.metric_rules
    no_data_rules = index.no_data_rules
    if not metric_rules and not no_data_rules:
        return Outcome()

    states: dict[tuple[int, int], _State] = {}
    heard: dict[tuple[int, int], datetime.datetime] = {}  # no-data rules: newest reading heard per (rule, device)
    failed: dict[int, BaseException] = {}  # rule id -> why it was skipped
    for reading in readings:
        series_id, device_id, metric_key, ts, value = reading
        for rule in metric_rules.get((device_id, metric_key), ()):
            if failed and rule.id in failed:
                continue
            key = (rule.id, device_id)
            try:  # free when nothing raises (Python 3.11): the hot loop pays nothing for the isolation
                state = states.get(key)
                if state is None:
                    state = states[key] = _State(rule, series_id, ts, value)
                    if rule.kind == RuleKind.RATE_OF_CHANGE:
                        state.history = []
                elif ts < state.ts:  # older than what this batch already said: no say in the current state
                    if state.history is not None:
                        state.history.append((ts, value))
                    continue
                state.ts, state.value = ts, value
                if state.history is not None:
                    state.history.append((ts, value))
                elif threshold_holds(rule, value):
                    if state.run_start is None:
                        state.run_start = ts
                    state.run_count += 1
                else:
                    state.run_start, state.run_count, state.broken = None, 0, True
            except RULE_ERRORS as error:
                failed[rule.id] = error
        for rule in no_data_rules.get(device_id, ()):
            if not rule.metric_key or rule.metric_key == metric_key:
                key = (rule.id, device_id)
                if key not in heard or heard[key] < ts:
                    heard[key] = ts

    openings: list[Opening] = []
    clearings = [Clearing(rule_id, device_id, ts, None, guarded=False) for (rule_id, device_id), ts in heard.items()]
    conditions: list[tuple[tuple[int, int], _State]] = []
    rate_states = []
    for key, state in states.items():
        rule = state.rule
        if rule.id in failed:
            continue
        try:
            if rule.kind == RuleKind.RATE_OF_CHANGE:
                rate_states.append((key, state))
            elif rule.for_duration:
                conditions.append((key, state))
            elif state.run_count:
                message = threshold_message(rule, index, key[1], state.value)
                openings.append(Opening(rule, key[1], rule.metric_key, message, state.ts, state.value, state.run_count))
            elif threshold_clears(rule, state.value):
                clearings.append(Clearing(rule.id, key[1], state.ts, state.value))
        except RULE_ERRORS as error:
            failed[rule.id] = error

    def apply(only: set[int] | None) -> Outcome:
        def mine(rule_id: int) -> bool:
            return only is None or rule_id in only

        return _transitions_with_retries(
            [item for item in rate_states if mine(item[0][0])],
            [item for item in conditions if mine(item[0][0])],
            [o for o in openings if mine(o.rule.id) and o.rule.id not in failed],
            [c for c in clearings if mine(c.rule_id)],
            index,
            failed,
        )

    rule_ids = [o.rule.id for o in openings] + [c.rule_id for c in clearings]
    rule_ids += [key[0] for key, _ in rate_states] + [key[0] for key, _ in conditions]
    outcome = rules_isolated(apply, rule_ids, failed)
    if failed:
        rule_failures_report(failed, stage="evaluation")
    return outcome


def _transitions_with_retries(rate_states, conditions, openings, clearings, index, failed) -> Outcome:
    """The batch's one transaction: decide rate-of-change and *for* rules (they need the database), then apply."""
    for attempt in range(DEADLOCK_RETRIES):
        # Fresh lists per attempt: the deciders append to them, and a rolled-back attempt's appends are void.
        decided_openings, decided_clearings = list(openings), list(clearings)
        try:
            with transaction.atomic():
                if rate_states:
                    _rate_decide(rate_states, index, decided_openings, decided_clearings, failed)
                if conditions:
                    _conditions_apply(conditions, index, decided_openings, decided_clearings, failed)
                return transitions_apply(decided_openings, decided_clearings, index=index)
        except OperationalError as error:
            # Two listeners flushing the same devices can lock the same alert rows in opposite orders; PostgreSQL
            # aborts one of them, and repeating the (idempotent) statements is the standard answer.
            if not isinstance(error.__cause__, psycopg.errors.DeadlockDetected) or attempt == DEADLOCK_RETRIES - 1:
                raise
            logger.info("alert transitions deadlocked with another process; retrying")
    return Outcome()


# ---------------------------------------------------------------------------------------------------------------------
# Rate of change: the value from rate_window ago
# ---------------------------------------------------------------------------------------------------------------------

# The first stored reading at or after ``since`` per series: a backwards-free index range scan of the primary key
# (series_id, ts) per series, all in one statement. Committed readings of this batch are included.
_RATE_REFERENCE = """
    SELECT w.series_id, w.since, r.value
    FROM unnest(%s::int[], %s::timestamptz[]) AS w (series_id, since)
    CROSS JOIN LATERAL (
        SELECT value FROM telemetry_reading
        WHERE series_id = w.series_id AND ts >= w.since
        ORDER BY ts LIMIT 1
    ) r
"""


def _rate_decide(rate_states, index: RulesIndex, openings: list, clearings: list, failed: dict) -> None:
    """Change = newest value - the first reading at or after (newest ts - window), i.e. the change within the window.

    When the batch itself reaches back to the window's start (it holds a reading at or before ``since``), the
    reference comes from the batch; otherwise from the stored readings, one query for all such series.
    """
    references: dict[tuple[int, datetime.datetime], float] = {}
    wanted = []
    usable = []
    for key, state in rate_states:
        try:
            since = state.ts - state.rule.rate_window
        except RULE_ERRORS as error:  # a window beyond datetime's range: this rule only
            failed[key[0]] = error
            continue
        usable.append((key, state))
        history = state.history
        if history and min(ts for ts, _ in history) <= since:
            inside = [(ts, value) for ts, value in history if ts >= since]
            references[state.series_id, since] = min(inside)[1]
        else:
            wanted.append((state.series_id, since))
    if wanted:
        wanted = sorted(set(wanted))
        with connection.cursor() as cursor:
            cursor.execute(_RATE_REFERENCE, [[w[0] for w in wanted], [w[1] for w in wanted]])
            for series_id, since, value in cursor.fetchall():
                references[series_id, since] = value
    for (rule_id, device_id), state in usable:
        rule = state.rule
        try:
            reference = references.get((state.series_id, state.ts - rule.rate_window))
            change = 0.0 if reference is None else state.value - reference
            if rate_holds(rule, change):
                message = rate_message(rule, index, device_id, state.value, change)
                openings.append(Opening(rule, device_id, rule.metric_key, message, state.ts, state.value))
            else:
                clearings.append(Clearing(rule_id, device_id, state.ts, state.value))
        except RULE_ERRORS as error:
            failed[rule_id] = error


# ---------------------------------------------------------------------------------------------------------------------
# For durations: RuleCondition
# ---------------------------------------------------------------------------------------------------------------------

# holding_since: NULL when the newest reading breaks the condition; the batch's run start when a reading of the batch
# broke it (``reset``); otherwise the stored value if any (the condition has held since an earlier batch).
# An older batch arriving late (last_ts newer than its reading) changes nothing.
_CONDITIONS_UPSERT = """
    WITH src AS (
        SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[], %s::float8[], %s::timestamptz[], %s::bool[])
            AS src (rule_id, device_id, holding_since, last_value, last_ts, reset)
    )
    INSERT INTO alerts_rulecondition AS rc (rule_id, device_id, holding_since, last_value, last_ts)
    SELECT rule_id, device_id, holding_since, last_value, last_ts FROM src ORDER BY rule_id, device_id
    ON CONFLICT (rule_id, device_id) DO UPDATE SET
        holding_since = CASE
            WHEN EXCLUDED.holding_since IS NULL THEN NULL
            WHEN (SELECT reset FROM src WHERE src.rule_id = EXCLUDED.rule_id AND src.device_id = EXCLUDED.device_id)
                THEN EXCLUDED.holding_since
            ELSE COALESCE(rc.holding_since, EXCLUDED.holding_since)
        END,
        last_value = EXCLUDED.last_value,
        last_ts = EXCLUDED.last_ts
    WHERE rc.last_ts IS NULL OR rc.last_ts <= EXCLUDED.last_ts
    RETURNING rule_id, device_id, holding_since
"""


def _conditions_apply(conditions, index: RulesIndex, openings: list, clearings: list, failed: dict) -> None:
    params = [[], [], [], [], [], []]
    for (rule_id, device_id), state in conditions:
        for column, value in zip(
            params, (rule_id, device_id, state.run_start, state.value, state.ts, state.broken), strict=True
        ):
            column.append(value)
    with connection.cursor() as cursor:
        cursor.execute(_CONDITIONS_UPSERT, params)
        holding = {(rule_id, device_id): since for rule_id, device_id, since in cursor.fetchall()}
    for key, state in conditions:
        rule, device_id = state.rule, key[1]
        if key not in holding:  # a newer state is stored already
            continue
        since = holding[key]
        try:
            if since is not None and state.ts - since >= rule.for_duration:
                message = threshold_message(rule, index, device_id, state.value)
                openings.append(
                    Opening(rule, device_id, rule.metric_key, message, state.ts, state.value, state.run_count)
                )
            elif since is None and threshold_clears(rule, state.value):
                clearings.append(Clearing(rule.id, device_id, state.ts, state.value))
        except RULE_ERRORS as error:
            failed[rule.id] = error


# ---------------------------------------------------------------------------------------------------------------------
# Applying transitions (shared with the beat job for no-data and elapsed for durations)
# ---------------------------------------------------------------------------------------------------------------------

_OPEN = """
    INSERT INTO alerts_alert AS a (
        rule_id, device_id, metric_key, severity, status, message, opened_at, last_triggered_at, trigger_count,
        first_value, last_value, acknowledged_note, resolved_note
    )
    SELECT rule_id, device_id, metric_key, severity, 'active', message, ts, ts, n, value, value, '', ''
    FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::int[],
                %s::float8[]) AS o (rule_id, device_id, metric_key, severity, message, ts, n, value)
    ORDER BY rule_id, device_id
    ON CONFLICT (rule_id, device_id) WHERE status IN ('active', 'acknowledged') {on_conflict}
    RETURNING id, rule_id, device_id, opened_at, (xmax = 0) AS inserted
"""
_RETRIGGER = """DO UPDATE SET
        last_value = EXCLUDED.last_value,
        last_triggered_at = EXCLUDED.last_triggered_at,
        trigger_count = a.trigger_count + EXCLUDED.trigger_count
    WHERE a.last_triggered_at <= EXCLUDED.last_triggered_at"""

_CLEAR = """
    WITH c AS (
        SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::float8[], %s::timestamptz[], %s::bool[])
            AS c (rule_id, device_id, value, ts, guarded)
    )
    UPDATE alerts_alert a
    SET status = 'cleared', cleared_at = GREATEST(c.ts, a.last_triggered_at),
        next_escalation_at = NULL, next_escalation_position = NULL
    FROM c
    WHERE a.rule_id = c.rule_id AND a.device_id = c.device_id AND a.status IN ('active', 'acknowledged')
      AND (NOT c.guarded OR a.last_triggered_at <= c.ts)
    RETURNING a.id, a.cleared_at, c.value
"""

_EVENTS = """
    INSERT INTO alerts_alertevent (alert_id, kind, at, note, value)
    SELECT alert_id, kind, at, '', value
    FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[], %s::float8[]) AS e (alert_id, kind, at, value)
"""


def transitions_apply(
    openings: list[Opening], clearings: list[Clearing], *, index: RulesIndex | None = None, retrigger: bool = True
) -> Outcome:
    """Open (or retrigger) and clear alerts set-wise; write their events; start escalation of new alerts.

    Constant statements whatever the batch: one opening upsert, one clearing update, one event insert and one
    escalation update.

    ``retrigger=False`` (beat: no-data and elapsed durations, where no new reading arrived) leaves an open alert
    as it is. Must run inside a transaction.
    """
    outcome = Outcome()
    events: list[tuple[int, str, datetime.datetime, float | None]] = []
    with connection.cursor() as cursor:
        if openings:
            # Several openings of one (rule, device) in a list would make ON CONFLICT touch a row twice (an error).
            unique = {(o.rule.id, o.device_id): o for o in openings}
            rows = list(unique.values())
            on_conflict = _RETRIGGER if retrigger else "DO NOTHING"
            cursor.execute(
                _OPEN.format(on_conflict=on_conflict),
                [
                    [o.rule.id for o in rows],
                    [o.device_id for o in rows],
                    [o.metric_key for o in rows],
                    [o.rule.severity for o in rows],
                    [o.message for o in rows],
                    [o.ts for o in rows],
                    [o.count for o in rows],
                    [o.value for o in rows],
                ],
            )
            for alert_id, rule_id, device_id, opened_at, inserted in cursor.fetchall():
                if inserted:
                    outcome.opened.append(alert_id)
                    opening = unique[rule_id, device_id]
                    events.append((alert_id, AlertEventKind.OPENED, opened_at, opening.value))
                else:
                    outcome.retriggered.append(alert_id)
        if clearings:
            unique_clear = {(c.rule_id, c.device_id): c for c in clearings}
            rows = list(unique_clear.values())
            cursor.execute(
                _CLEAR,
                [
                    [c.rule_id for c in rows],
                    [c.device_id for c in rows],
                    [c.value for c in rows],
                    [c.ts for c in rows],
                    [c.guarded for c in rows],
                ],
            )
            for alert_id, cleared_at, value in cursor.fetchall():
                outcome.cleared.append(alert_id)
                events.append((alert_id, AlertEventKind.CLEARED, cleared_at, value))
        if events:
            cursor.execute(_EVENTS, [list(column) for column in zip(*events, strict=True)])
    if outcome.opened:
        outcome.escalation_due = escalations_start(alert_ids=outcome.opened)
    if changed := outcome.opened + outcome.retriggered + outcome.cleared:
        alerts_changed_on_commit(changed)  # live dashboards
    if outcome.opened or outcome.cleared:
        logger.info("alerts: %d opened, %d cleared", len(outcome.opened), len(outcome.cleared))
    return outcome
