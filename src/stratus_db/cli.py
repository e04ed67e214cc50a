"""`stratus-db`: migrate, db (current, history, downgrade, check), audit (seal, verify, checkpoint, report, purge),
config, generate-key, rotate-keys, demo, health, purge-expired, export-user, apply-retention, import-messages."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stratus_db import revisions
from stratus_db.analytics import AnalyticsManager, MetricsReport, RollupOutcome
from stratus_db.analytics.render import to_csv, to_html, to_json
from stratus_db.audit.manager import (
    DEFAULT_SEAL_BATCH,
    MAX_SEAL_BATCH,
    AuditManager,
    AuditPurgeReport,
    SealReport,
)
from stratus_db.audit.report import AuditReport, as_csv, as_html
from stratus_db.audit.sealing import Checkpoint, VerifyReport
from stratus_db.config import Settings, effective_settings, load_settings
from stratus_db.conversations.manager import ConversationManager
from stratus_db.conversations.schemas import MessageImport
from stratus_db.database import StratusPostgreSQLIntegration
from stratus_db.demo import run_demo
from stratus_db.errors import ConflictError, NotFoundError, StratusError, ValidationError
from stratus_db.kit.validation import parse_uuid, validate_input
from stratus_db.logging import configure_json
from stratus_db.memory.manager import MemoryManager
from stratus_db.models import ConversationStatus
from stratus_db.privacy.manager import PrivacyManager
from stratus_db.privacy.retention import (
    DEFAULT_BATCH_SIZE,
    MAX_BATCH_SIZE,
    SETTINGS,
    RetentionKind,
    RetentionReport,
)
from stratus_db.schema import head_revision
from stratus_db.security.api_keys import ApiKey, ApiKeyManager, NewApiKey
from stratus_db.security.crypto import BLIND_INDEX_VARIABLE, KEYS_VARIABLE, new_key_entry, new_secret
from stratus_db.security.principal import Principal, PrincipalKind
from stratus_db.security.rotation import DEFAULT_BATCH_SIZE as ROTATION_BATCH
from stratus_db.security.rotation import MAX_BATCH_SIZE as ROTATION_MAX_BATCH
from stratus_db.security.rotation import KeyManager, RotationReport
from stratus_db.users.manager import UserManager

app = typer.Typer(
    help="Stratus.IA database layer. Configured by DATABASE_URL (unset: the embedded SQLite file)."
)
db_app = typer.Typer(help="The schema's revision: current, history, downgrade, check.")
app.add_typer(db_app, name="db")
audit_app = typer.Typer(help="The audit trail's tamper evidence: seal, verify, checkpoint (docs/audit.md).")
app.add_typer(audit_app, name="audit")

T = TypeVar("T")

OPERATOR = Principal.system("stratus-db")
"""Who the audit rows of the CLI's writes name."""


def _fail(message: str) -> typer.Exit:
    """One line on standard error; raise the returned Exit (exit code 1)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


def _settings() -> Settings:
    try:
        return load_settings()
    except StratusError as exc:
        raise _fail(exc.message) from None


def _run(action: Callable[[StratusPostgreSQLIntegration], Awaitable[T]]) -> T:
    """Run `action` on a database built from the environment; a StratusError becomes one line and exit code 1."""

    async def main() -> T:
        settings = load_settings()
        configure_json(settings.LOG_LEVEL)  # a command is an application: it prints the library's lines
        async with StratusPostgreSQLIntegration(settings) as db:
            return await action(db)

    try:
        return asyncio.run(main())
    except StratusError as exc:
        raise _fail(exc.message) from None


class _Progress:
    """Progress of a long job: a bar on standard error when it is a terminal (rich, which Typer brings), else a
    plain line per step there (logs, CI, cron), so that standard output keeps only the result."""

    def __init__(self, description: str, total: int | None, unit: str) -> None:
        self._description = description
        self._total = total
        self._unit = unit
        console = Console(stderr=True)
        self._bar: Progress | None = None
        if console.is_terminal:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn() if total is not None else TextColumn("{task.completed} " + unit),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self._task = self._bar.add_task(description, total=total)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
        else:
            of = f"/{self._total}" if self._total is not None else ""
            typer.echo(f"{self._description}: {done}{of} {self._unit}", err=True)


# -- schema -----------------------------------------------------------------------------------------------------


@app.command()
def migrate(
    sql: Annotated[
        bool,
        typer.Option(
            "--sql", help="Print the upgrade's SQL (Alembic's offline mode) for review; touch no database."
        ),
    ] = False,
    from_revision: Annotated[
        str | None,
        typer.Option(
            "--from", help="With --sql: the revision the database is at (default: an empty database)."
        ),
    ] = None,
) -> None:
    """Upgrade the database schema to the newest revision; prints the revisions from → to."""
    if sql:
        settings = _settings()
        if settings.is_embedded:
            raise _fail(
                "migrate --sql writes PostgreSQL's SQL (set DATABASE_URL): the embedded SQLite file is migrated in "
                "place, its table rebuilds need the live tables"
            )
        try:
            typer.echo(revisions.upgrade_sql(settings.database_url, from_revision), nl=False)
        except StratusError as exc:
            raise _fail(exc.message) from None
        return
    if from_revision is not None:
        raise _fail("--from only goes with --sql (migrate reads the database's revision itself)")

    async def upgrade(db: StratusPostgreSQLIntegration) -> tuple[str | None, str]:
        return await db.schema_revision(), await db.migrate()

    before, after = _run(upgrade)
    if before == after:
        typer.echo(f"schema at revision {after} (already at head: nothing to do)")
    else:
        typer.echo(f"schema at revision {after} ({before or 'empty'} → {after})")


@db_app.command("current")
def db_current() -> None:
    """The database's schema revision, and whether it is the head this code expects."""
    revision = _run(lambda db: db.schema_revision())
    head = head_revision()
    if revision is None:
        typer.echo(f"none: the database is empty (head is {head}: run `stratus-db migrate`)")
    elif revision == head:
        typer.echo(f"{revision} (head)")
    else:
        typer.echo(f"{revision} (head is {head}: run `stratus-db migrate`)")


@db_app.command("history")
def db_history() -> None:
    """The revisions this package ships, newest first; the head and the database's revision are marked."""
    for line in _run(lambda db: db.revision_history()):
        typer.echo(line)


@db_app.command("grant-app-role")
def db_grant_app_role(
    role: Annotated[str, typer.Argument(help="The role the application logs in as (created beforehand).")],
) -> None:
    """PostgreSQL: let ROLE do what the library does, and never UPDATE, DELETE or TRUNCATE the audit trail (erasure
    and retention go through functions that run as the tables' owner). Run as the owner, after `migrate`."""
    _run(lambda db: db.grant_application_role(role))
    typer.echo(f"{role} may use the data layer; the audit trail is append-only for it")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="An older revision id (see `db history`), or `base`.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Downgrade the schema to an older revision: DESTRUCTIVE, the newer revisions' columns and tables are dropped
    with their data. Asks for confirmation unless --yes."""
    try:
        revisions.resolve(revision, "revision")
    except StratusError as exc:
        raise _fail(exc.message) from None
    current = _run(lambda db: db.schema_revision())
    try:
        target = revisions.downgrade_target(revision, current)
    except StratusError as exc:
        raise _fail(exc.message) from None
    where = effective_settings(_settings())["DATABASE_URL"]  # its password masked, in the query string too
    shown = target or revisions.BASE
    if current == target:
        typer.echo(f"schema already at revision {current}: nothing to do")
        return
    if not yes:
        typer.confirm(
            f"Downgrade {where} from revision {current} to {shown}? What the newer revisions added is dropped "
            "with its data",
            abort=True,
        )
    after = _run(lambda db: db.downgrade(revision))
    typer.echo(
        f"schema at revision {after or revisions.BASE} ({current} → {after or revisions.BASE}); "
        "`stratus-db migrate` upgrades it again"
    )


@db_app.command("check")
def db_check() -> None:
    """Whether the database is at head and its tables match the models. Exit code 1 when not."""
    check = _run(lambda db: db.check_schema())
    if check.revision != check.head:
        typer.echo(
            f"revision {check.revision or 'none (empty)'}, head is {check.head}: run `stratus-db migrate`"
        )
    else:
        typer.echo(f"revision {check.revision} (head)")
    if check.differences:
        typer.echo(f"the schema differs from the models ({len(check.differences)} differences):")
        for difference in check.differences:
            typer.echo(f"  {difference}")
    elif check.revision == check.head:
        typer.echo("the schema matches the models")
    if not check.ok:
        raise typer.Exit(code=1)


# -- configuration ----------------------------------------------------------------------------------------------


@app.command("config")
def show_config(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object instead of NAME=value lines.")
    ] = False,
) -> None:
    """The effective settings (environment and defaults), secrets masked."""
    effective = effective_settings(_settings())
    if as_json:
        typer.echo(json.dumps(effective, indent=2))
    else:
        for name, value in effective.items():
            typer.echo(f"{name}={value}")


@app.command("generate-key")
def generate_key(
    key_id: Annotated[
        str | None,
        typer.Option(
            "--id",
            help="The key's id: 1 to 16 of a-z, 0-9 and '-' (default: k + today's UTC date + 4 random hex digits).",
        ),
    ] = None,
    blind_index: Annotated[
        bool,
        typer.Option(
            "--blind-index", help=f"Print a secret for {BLIND_INDEX_VARIABLE} instead of a keyring entry."
        ),
    ] = False,
) -> None:
    """Print a new random key: an ID:BASE64 entry for STRATUS_ENCRYPTION_KEYS (put it first to make it the active
    key, and keep the older ones until every value has moved to it), or with --blind-index the secret of
    STRATUS_BLIND_INDEX_KEY. Connects to nothing and stores nothing."""
    if blind_index:
        if key_id is not None:
            raise _fail(f"--id names a keyring entry; {BLIND_INDEX_VARIABLE} has no id")
        typer.echo(new_secret())
        typer.echo(
            f"set {BLIND_INDEX_VARIABLE} to this line; it cannot change without recomputing every index",
            err=True,
        )
        return
    try:
        entry = new_key_entry(key_id)
    except StratusError as exc:
        raise _fail(exc.message.replace("key_id", "--id")) from None
    typer.echo(entry)
    typer.echo(
        f"put this line first in {KEYS_VARIABLE} (comma-separated, the first one is active); keep the older keys "
        "after it until every value has moved to the new one",
        err=True,
    )


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "0.0.0.0",
    port: Annotated[int | None, typer.Option(help="The port (default: PORT, 8080).")] = None,
) -> None:
    """Run the HTTP service (docs/api.md) until SIGTERM or Ctrl-C, then finish the requests under way (8 s at most)
    and close the database. On the embedded SQLite file when DATABASE_URL is unset. Does not migrate PostgreSQL: run `stratus-db
    migrate` first (a Cloud Run job)."""
    import uvicorn

    from stratus_db.api import create_app

    settings = _settings()
    configure_json(settings.LOG_LEVEL)
    uvicorn.run(
        create_app(settings=settings),
        host=host,
        port=port or settings.PORT,
        proxy_headers=False,  # the service reads X-Forwarded-For itself, from trusted proxies only
        log_config=None,
        timeout_graceful_shutdown=8,  # Cloud Run kills an instance 10 s after SIGTERM
    )


@app.command("create-token")
def create_token(
    kind: Annotated[PrincipalKind, typer.Option(help="The principal's kind.")],
    principal_id: Annotated[
        str,
        typer.Option("--id", help="A user's id (kind user), an agent's or a service's name, an operator's."),
    ],
    acting_for: Annotated[
        str | None, typer.Option(help="For an agent: the id of the user it acts for.")
    ] = None,
    days: Annotated[float, typer.Option(help="How long the token is valid, in days (at most 366).")] = 30,
) -> None:
    """Print a bearer token for the HTTP service, signed with STRATUS_API_JWT_PRIVATE_KEY (EdDSA) where it is set,
    else with STRATUS_API_JWT_SECRET (HS256). Connects to nothing."""
    from stratus_db.api import issue_token

    settings = _settings()
    try:
        typer.echo(
            issue_token(settings, _principal_named(kind, principal_id, acting_for), timedelta(days=days))
        )
    except StratusError as exc:
        raise _fail(exc.message) from None
    except ValueError as exc:
        raise _fail(f"cannot issue that token: {exc}") from None


def _principal_named(kind: PrincipalKind, principal_id: str, acting_for: str | None) -> Principal:
    """The principal the operator names on the command line (raises ValueError if it is not one)."""
    if kind is PrincipalKind.user:
        return Principal.for_user(uuid.UUID(principal_id))
    if kind is PrincipalKind.agent:
        return Principal.agent(principal_id, acting_for=uuid.UUID(acting_for or ""))
    return Principal(kind=kind, id=principal_id)


@app.command("create-api-key")
def create_api_key(
    name: Annotated[str, typer.Option(help="What the key is for (the service that will hold it).")],
    kind: Annotated[PrincipalKind, typer.Option(help="The kind of principal the key stands for.")],
    principal_id: Annotated[str, typer.Option("--id", help="The principal's id (a user's id, a name).")],
    acting_for: Annotated[
        str | None, typer.Option(help="For an agent: the id of the user it acts for.")
    ] = None,
    days: Annotated[
        float | None, typer.Option(help="How long the key is valid, in days (default: until revoked).")
    ] = None,
) -> None:
    """Make an API key for the HTTP service and print it: it is shown this once, and stored only as a hash."""
    try:
        for_principal = _principal_named(kind, principal_id, acting_for)
    except ValueError as exc:
        raise _fail(f"cannot make that key: {exc}") from None

    async def create(db: StratusPostgreSQLIntegration) -> NewApiKey:
        expires_at = None if days is None else db.clock() + timedelta(days=days)
        async with db.context(principal=OPERATOR, purpose="api-key"):
            return await ApiKeyManager(db).create_key(for_principal, name, expires_at=expires_at)

    made = _run(create)
    typer.echo(made.token)
    typer.echo(
        f"key {made.key.key_id} stands for {for_principal.actor}; keep it secret, it is not shown again",
        err=True,
    )


@app.command("revoke-api-key")
def revoke_api_key(key_id: Annotated[str, typer.Argument(help="The key's id (list-api-keys).")]) -> None:
    """Revoke an API key: the service refuses it from the next request on."""

    async def revoke(db: StratusPostgreSQLIntegration) -> ApiKey:
        async with db.context(principal=OPERATOR, purpose="api-key"):
            return await ApiKeyManager(db).revoke_key(key_id)

    key = _run(revoke)
    typer.echo(f"key {key.key_id} ({key.name}) revoked")


@app.command("list-api-keys")
def list_api_keys(
    include_revoked: Annotated[bool, typer.Option("--all", help="Revoked keys too.")] = False,
) -> None:
    """The API keys (never their secrets): id, name, whom each stands for, when it expires or was revoked."""

    async def listed(db: StratusPostgreSQLIntegration) -> list[ApiKey]:
        async with db.context(principal=OPERATOR, purpose="api-key"):
            return await ApiKeyManager(db).list_keys(include_revoked=include_revoked)

    for key in _run(listed):
        state = (
            f"revoked {key.revoked_at.isoformat()}"
            if key.revoked_at
            else f"expires {key.expires_at.isoformat()}"
            if key.expires_at
            else "no expiry"
        )
        typer.echo(f"{key.key_id}  {key.principal().actor}  {key.name}  ({state})")


@app.command("rotate-keys")
def rotate_keys(
    batch_size: Annotated[
        int,
        typer.Option(
            min=1, max=ROTATION_MAX_BATCH, help="Users whose data key is rewrapped per transaction."
        ),
    ] = ROTATION_BATCH,
) -> None:
    """Rewrap every user's data key under the active key (the first of STRATUS_ENCRYPTION_KEYS), in bounded batches, each
    committed on its own: interrupted, it resumes where it stopped. Values stay encrypted under their data keys, so
    none is rewritten. When it reports no data key under an older key, that key can leave the keyring."""

    async def rotate(db: StratusPostgreSQLIntegration) -> RotationReport:
        async with db.context(principal=OPERATOR, purpose="rotate-keys"):
            return await KeyManager(db).rotate_keys(
                batch_size=batch_size, on_progress=lambda done, _total: progress.update(done)
            )

    with _Progress("rewrapping data keys", total=None, unit="users") as progress:
        report = _run(rotate)
    typer.echo(
        f"active key {report.active_key}: {report.rewrapped} data keys rewrapped, {report.already_current} "
        "already under it"
    )
    older = [key_id for key_id in report.remaining_key_ids if key_id != report.active_key]
    typer.echo(
        f"data keys still under {', '.join(older)}: run again"
        if older
        else "no data key is under an older key"
    )


# -- audit ------------------------------------------------------------------------------------------------------


@audit_app.command("seal")
def audit_seal(
    batch_size: Annotated[
        int, typer.Option(min=1, max=MAX_SEAL_BATCH, help="Audit rows per checkpoint (and per transaction).")
    ] = DEFAULT_SEAL_BATCH,
) -> None:
    """Seal every audit row committed and not yet sealed into the hash chain (schedule it, e.g. every minute), and
    print the new head."""

    async def seal(db: StratusPostgreSQLIntegration) -> SealReport:
        async with db.context(principal=OPERATOR, purpose="audit-seal"):
            return await AuditManager(db).seal(batch_size=batch_size, on_progress=progress.update)

    with _Progress("sealing audit rows", total=None, unit="rows") as progress:
        report = _run(seal)
    if not report.checkpoints:
        typer.echo("nothing to seal: every audit row is sealed")
        return
    last = report.checkpoints[-1]
    typer.echo(
        f"sealed {report.rows_sealed} audit rows in {len(report.checkpoints)} checkpoint(s); head "
        f"{last.head} at position {last.last_position} (checkpoint {last.checkpoint_id})"
    )


@audit_app.command("verify")
def audit_verify(
    heads: Annotated[
        Path | None,
        typer.Option(help="Checkpoints exported earlier (`audit checkpoint --export`), to compare with."),
    ] = None,
) -> None:
    """Recompute the whole trail against its seals; exit code 1 and the first problems if anything differs."""
    expected: list[Any] = []
    if heads is not None:
        try:
            expected = json.loads(heads.read_text(encoding="utf-8"))["checkpoints"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _fail(f"--heads {heads}: not an exported checkpoint file ({type(exc).__name__})") from None

    async def verify(db: StratusPostgreSQLIntegration) -> VerifyReport:
        async with db.context(principal=OPERATOR, purpose="audit-verify"):
            return await AuditManager(db).verify(expected_heads=expected)

    report = _run(verify)
    typer.echo(
        f"{report.rows_checked} sealed rows and {report.checkpoints_checked} checkpoints checked; "
        f"{report.redacted} rows redacted by erasures; {report.unsealed} rows not sealed yet"
    )
    if report.ok:
        typer.echo("the audit trail matches its seals")
        return
    for problem in report.problems[:20]:
        where = f"position {problem.position}" if problem.position is not None else "unsealed"
        row = f", audit row {problem.audit_id}" if problem.audit_id is not None else ""
        typer.echo(f"{problem.kind}: {where}{row}: {problem.detail}")
    raise typer.Exit(code=1)


@audit_app.command("purge")
def audit_purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be purged; purge nothing.")
    ] = False,
) -> None:
    """Delete the audit rows past their retention (STRATUS_AUDIT_RETENTION_DAYS and STRATUS_AUDIT_RETENTION_RULES),
    in whole sealed checkpoints (schedule it daily, after `audit seal`); verification goes on from the last purged
    head."""

    async def purge(db: StratusPostgreSQLIntegration) -> AuditPurgeReport:
        async with db.context(principal=OPERATOR, purpose="audit-purge"):
            return await AuditManager(db).purge(dry_run=dry_run)

    report = _run(purge)
    if report.retention.keeps_everything:
        typer.echo(
            "the audit trail is kept for ever (STRATUS_AUDIT_RETENTION_DAYS is 0 and no "
            "STRATUS_AUDIT_RETENTION_RULES)"
        )
        return
    verb = "would be purged" if dry_run else "purged"
    retention = [f"{key}: {days or 'for ever'}" for key, days in report.retention.rules.items()]
    retention.append(f"otherwise {report.retention.default_days or 'for ever'}")
    typer.echo(
        f"{report.rows} audit rows in {report.checkpoints} checkpoint(s) {verb} (retention in days: "
        f"{', '.join(retention)})"
    )


class ReportFormat(StrEnum):
    json = "json"
    csv = "csv"
    html = "html"


def _emit(rendered: str, output: Path | None, what: str) -> None:
    """A report on standard output, or in `output` with one line saying so."""
    if output is None:
        typer.echo(rendered, nl=False)
    else:
        output.write_text(rendered, encoding="utf-8")
        typer.echo(f"{what} written to {output}")


@audit_app.command("report")
def audit_report(
    since: Annotated[
        datetime, typer.Option(help="Start of the range, included (ISO 8601; UTC when no offset).")
    ],
    until: Annotated[datetime, typer.Option(help="End of the range, excluded.")],
    output_format: Annotated[
        ReportFormat, typer.Option("--format", help="json, csv or html.")
    ] = ReportFormat.json,
    output: Annotated[
        Path | None, typer.Option(help="Write to this file instead of standard output.")
    ] = None,
) -> None:
    """What the audit trail holds for a time range: rows by action, table, principal kind and day; refusals;
    exports, erasures and sensitive reads; the most active data subjects; the record of processing by purpose."""
    window = [moment if moment.tzinfo else moment.replace(tzinfo=UTC) for moment in (since, until)]

    async def report(db: StratusPostgreSQLIntegration) -> AuditReport:
        async with db.context(principal=OPERATOR, purpose="audit-report"):
            return await AuditManager(db).report(window[0], window[1])

    found = _run(report)
    rendered = {
        ReportFormat.json: lambda: found.model_dump_json(indent=2) + "\n",
        ReportFormat.csv: lambda: as_csv(found),
        ReportFormat.html: lambda: as_html(found),
    }[output_format]()
    _emit(rendered, output, f"audit report ({found.rows} rows)")


@app.command("rollup")
def rollup(
    through: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="The last day to roll up (default: yesterday)."),
    ] = None,
) -> None:
    """Roll up every complete day not rolled up yet, in STRATUS_METRICS_TIME_ZONE (docs/metrics.md): run it once a
    day, after midnight there. Idempotent; rebuilds the rollups of another time zone."""

    async def roll(db: StratusPostgreSQLIntegration) -> RollupOutcome:
        return await AnalyticsManager(db).rollup(
            through=None if through is None else through.date(), principal=OPERATOR
        )

    outcome = _run(roll)
    rebuilt = ", rebuilt from scratch" if outcome.rebuilt else ""
    typer.echo(
        f"rolled up {outcome.days_rolled} days{rebuilt}: the rollups hold every day through "
        f"{outcome.rolled_through or 'none yet'} ({outcome.time_zone})"
    )
    if outcome.samples_purged:
        typer.echo(f"deleted {outcome.samples_purged} service samples past their retention")


@app.command("report")
def metrics_report(
    since: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="The first day, included.")],
    until: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="The last day, included.")],
    agent: Annotated[str | None, typer.Option(help="Only this agent's users and responses.")] = None,
    output_format: Annotated[
        ReportFormat, typer.Option("--format", help="json, csv or html (the dashboard's page).")
    ] = ReportFormat.json,
    output: Annotated[
        Path | None, typer.Option(help="Write to this file instead of standard output.")
    ] = None,
) -> None:
    """The metrics of docs/metrics.md over local days in STRATUS_METRICS_TIME_ZONE: usage, performance, quality and
    business, as on the service's /dashboard."""

    async def report(db: StratusPostgreSQLIntegration) -> MetricsReport:
        return await AnalyticsManager(db).report(since.date(), until.date(), agent=agent, principal=OPERATOR)

    found = _run(report)
    rendered = {ReportFormat.json: to_json, ReportFormat.csv: to_csv, ReportFormat.html: to_html}[
        output_format
    ](found)
    _emit(rendered, output, f"metrics report ({found.since} to {found.until})")


@audit_app.command("checkpoint")
def audit_checkpoint(
    export: Annotated[
        Path | None, typer.Option("--export", help="Write every checkpoint's head to this JSON file.")
    ] = None,
) -> None:
    """List the checkpoints (id, last position, head); with --export, write them to a file to keep outside the
    database (then `audit verify --heads FILE` compares with it)."""

    async def listed(db: StratusPostgreSQLIntegration) -> list[Checkpoint]:
        async with db.context(principal=OPERATOR, purpose="audit-checkpoint"):
            return await AuditManager(db).checkpoints()

    found = _run(listed)
    if export is not None:
        document = {
            "format": "stratus-db/audit-checkpoints",
            "version": 1,
            "checkpoints": [c.exported() for c in found],
        }
        export.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        typer.echo(f"{len(found)} checkpoint(s) written to {export}")
        return
    for checkpoint in found:
        typer.echo(
            f"{checkpoint.checkpoint_id}\t{checkpoint.sealed_at.isoformat()}\t"
            f"{checkpoint.first_position}-{checkpoint.last_position}\t{checkpoint.head}"
        )


# -- operations -------------------------------------------------------------------------------------------------


@app.command()
def demo() -> None:
    """Run the complete demonstration (create a user, a memory, a conversation; read back; show the audit)."""
    _run(run_demo)


@app.command()
def health() -> None:
    """Check the database: latency, pool, schema revision. Exit code 1 when unhealthy."""
    status = _run(lambda db: db.health_check())
    typer.echo(json.dumps(status.model_dump(), indent=2))
    if not status.healthy:
        raise typer.Exit(code=1)


@app.command("purge-expired")
def purge_expired(
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Rows deleted per transaction.")] = 1000,
) -> None:
    """Delete expired memories in bounded batches (schedule it: see docs/memory.md)."""

    async def purge(db: StratusPostgreSQLIntegration) -> int:
        async with db.context(principal=OPERATOR, purpose="purge-expired"):
            return await MemoryManager(db).purge_expired(batch_size=batch_size, on_progress=progress.update)

    with _Progress("purging expired memories", total=None, unit="deleted") as progress:
        deleted = _run(purge)
    typer.echo(f"purged {deleted} expired memories")


# -- the data subject's rights (docs/privacy.md) ---------------------------------------------------------------


@app.command("export-user")
def export_user(
    user_id: Annotated[str, typer.Argument(help="The user whose data is exported.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The file to write (replaced once complete).")
    ],
    purpose: Annotated[
        str, typer.Option(help="Why, for the audit row: e.g. the request's ticket (LGPD Art. 18 II).")
    ] = "data-subject-request",
) -> None:
    """Write everything held about a user to a JSON file (format stratus-db/user-export, docs/privacy.md)."""
    with _errors_as_exit():
        owner = parse_uuid(user_id, "USER_ID")

    async def export(db: StratusPostgreSQLIntegration) -> int:
        async with db.context(principal=OPERATOR, purpose=purpose):
            return await PrivacyManager(db).write_user_export(owner, output)

    written = _run(export)
    typer.echo(f"exported user {owner} to {output} ({written:,} bytes)")


class _KindsProgress:
    """One progress bar (or line per step) per kind of data, as a job reaches each in turn."""

    def __init__(self, description: str, unit: str) -> None:
        self._description = description
        self._unit = unit
        self._kind: str | None = None
        self._progress: _Progress | None = None

    def update(self, kind: str, done: int) -> None:
        if kind != self._kind:
            self.close()
            self._kind = kind
            self._progress = _Progress(f"{self._description} {kind}", total=None, unit=self._unit).__enter__()
        assert self._progress is not None, "opened above"
        self._progress.update(done)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.__exit__()
            self._progress = None


_RETENTION_WHAT = {
    RetentionKind.conversations: ("conversations", "purged", "no activity for {days} days"),
    RetentionKind.memories: ("memories", "purged", "neither updated nor read for {days} days"),
    RetentionKind.inactive_accounts: ("inactive accounts", "erased", "inactive for {days} days"),
}


def _retention_lines(report: RetentionReport) -> list[str]:
    """The result: a line per rule (what went, or why nothing does), then whether it was a dry run."""
    applied = {rule.kind: rule for rule in report.rules}
    lines = []
    for kind, setting in SETTINGS.items():
        name, done, why = _RETENTION_WHAT[kind]
        rule = applied.get(kind)
        if rule is None:
            lines.append(f"{name}: kept for ever ({setting} is 0)")
            continue
        count = report.deleted[kind]
        verb = f"would be {done}" if report.dry_run else done
        with_messages = f" with {report.messages} messages" if kind is RetentionKind.conversations else ""
        cutoff = rule.cutoff.isoformat(timespec="seconds")
        lines.append(f"{name}: {count} {verb}{with_messages} ({why.format(days=rule.days)}: before {cutoff})")
    if report.dry_run:
        lines.append("dry run: nothing was deleted")
    return lines


@app.command("apply-retention")
def apply_retention(
    batch_size: Annotated[
        int,
        typer.Option(
            min=1, max=MAX_BATCH_SIZE, help="Conversations, memories or users deleted per transaction."
        ),
    ] = DEFAULT_BATCH_SIZE,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
) -> None:
    """Delete what the STRATUS_RETENTION_* settings no longer keep, in bounded batches, each deletion audited
    (schedule it daily: see docs/privacy.md)."""

    async def apply(db: StratusPostgreSQLIntegration) -> RetentionReport:
        async with db.context(principal=OPERATOR, purpose="apply-retention"):
            return await PrivacyManager(db).apply_retention(
                batch_size=batch_size, dry_run=dry_run, on_progress=progress.update
            )

    progress = _KindsProgress("applying retention to", unit="deleted")
    try:
        report = _run(apply)
    finally:
        progress.close()
    for line in _retention_lines(report):
        typer.echo(line)


# -- import -----------------------------------------------------------------------------------------------------

CORPUS_FIELDS = ("conversation_id", "title", "seq")
"""Fields of a line that say where the message goes, not what it is (the corpus's format, /work/shared/data)."""


@dataclass
class _Conversation:
    """The lines of one conversation of the file (one `conversation_id` label)."""

    label: str | None
    first_line: int
    title: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    last_seq: int | None = None
    last_created_at: datetime | None = None


def _message_of(line: dict[str, Any], number: int) -> dict[str, Any]:
    """`import_messages`' mapping for one line, validated here so that the error names the line."""
    message = {key: value for key, value in line.items() if key not in CORPUS_FIELDS}
    created_at = message.get("created_at")
    if isinstance(created_at, str):
        try:
            message["created_at"] = datetime.fromisoformat(created_at)
        except ValueError:
            raise ValidationError(
                f"line {number}: created_at must be an ISO 8601 time with its offset "
                f"(e.g. 2026-03-14T12:00:00+00:00), got {created_at[:40]!r}"
            ) from None
    try:
        validate_input(MessageImport, message)
    except ValidationError as exc:
        raise ValidationError(f"line {number}: {exc.message}") from None
    return message


def _read_conversations(path: Path, *, into_one: bool) -> list[_Conversation]:
    """The file's messages grouped by their `conversation_id` label, in the order of first appearance, each
    conversation's messages in file order. Nothing is written: every line is checked first.

    Raises:
        ValidationError: the file cannot be read, or a line is malformed (the message names it).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    conversations: dict[str | None, _Conversation] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        if not isinstance(line, dict):
            raise ValidationError(
                f"line {number}: must be a JSON object (one message), got {type(line).__name__}"
            )
        label, title, seq = line.get("conversation_id"), line.get("title"), line.get("seq")
        if label is not None and not isinstance(label, str):
            raise ValidationError(f"line {number}: conversation_id must be text, got {label!r}")
        if title is not None and not isinstance(title, str):
            raise ValidationError(f"line {number}: title must be text, got {title!r}")
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
            raise ValidationError(f"line {number}: seq must be an integer, got {seq!r}")
        if into_one and conversations and label not in conversations:
            first = next(iter(conversations.values()))
            raise ValidationError(
                f"line {number}: conversation_id {label!r} differs from {first.label!r} (line {first.first_line}): "
                "the file holds several conversations; leave out --conversation-id to create one for each"
            )
        conversation = conversations.setdefault(label, _Conversation(label, number))
        if seq is not None:
            if conversation.last_seq is not None and seq <= conversation.last_seq:
                raise ValidationError(
                    f"line {number}: seq {seq} does not follow {conversation.last_seq}: a conversation's lines must "
                    "be in the order they were written"
                )
            conversation.last_seq = seq
        conversation.title = conversation.title or title
        message = _message_of(line, number)
        created_at = message.get("created_at")
        if isinstance(created_at, datetime):
            # import_messages checks this within one call; the file is imported in several.
            if conversation.last_created_at is not None and created_at < conversation.last_created_at:
                raise ValidationError(
                    f"line {number}: created_at is earlier than the line before it in conversation "
                    f"{conversation.label!r}: import history in the order it was written"
                )
            conversation.last_created_at = created_at
        conversation.messages.append(message)
    return list(conversations.values())


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def _errors_as_exit() -> Iterator[None]:
    try:
        yield
    except StratusError as exc:
        raise _fail(exc.message) from None


@app.command("import-messages")
def import_messages(
    file: Annotated[Path, typer.Argument(help="JSON Lines: one message an object (see docs/operations.md).")],
    user_id: Annotated[str, typer.Option(help="The existing user whose history this is.")],
    conversation_id: Annotated[
        str | None,
        typer.Option(
            help="Append every line to this existing active conversation of the user (the file must then hold one "
            "conversation). Default: a new conversation for each conversation_id of the file, titled by its title."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Messages per import_messages call (progress step).")
    ] = 1000,
) -> None:
    """Import a conversation history (JSON Lines) with import_messages: all or nothing, in one transaction."""
    with _errors_as_exit():
        owner = parse_uuid(user_id, "--user-id")
        target = parse_uuid(conversation_id, "--conversation-id") if conversation_id is not None else None
        conversations = _read_conversations(file, into_one=target is not None)
    total = sum(len(conversation.messages) for conversation in conversations)

    async def run(db: StratusPostgreSQLIntegration) -> list[tuple[_Conversation, uuid.UUID, int, int | None]]:
        manager = ConversationManager(db)
        done = 0
        results = []
        # Checked first, so that a wrong id is one clear error (the writes below would refuse it all the same).
        if await UserManager(db).get_user(owner) is None:
            raise NotFoundError(f"--user-id {owner}: no such user")
        if target is not None:
            found = await manager.get_conversation(target, owner)
            if found is None:
                raise NotFoundError(f"--conversation-id {target}: the user has no such conversation")
            if found.status != ConversationStatus.active:
                raise ConflictError(
                    f"--conversation-id {target}: the conversation is {found.status}; messages can only be "
                    "imported into an active conversation"
                )
        async with db.context(principal=OPERATOR, purpose="import-messages"), db.transaction() as tx:
            for conversation in conversations:
                if target is not None:
                    into = target
                else:
                    into = (
                        await manager.create_conversation(owner, conversation.title, tx=tx)
                    ).conversation_id
                first: int | None = None
                for chunk in _chunks(conversation.messages, batch_size):
                    result = await manager.import_messages(into, owner, chunk, tx=tx)
                    first = first if first is not None else result.first_seq
                    done += result.imported
                    progress.update(done)
                results.append((conversation, into, len(conversation.messages), first))
        return results

    with _Progress("importing messages", total=total, unit="messages") as progress:
        imported = _run(run)
    for conversation, into, count, first in imported:
        label = f"{conversation.label} → " if conversation.label is not None else ""
        seqs = f" (seq {first}–{first + count - 1})" if first is not None else ""
        typer.echo(f"{label}{into}: {count} messages{seqs}")
    typer.echo(f"imported {total} messages into {len(imported)} conversations")
