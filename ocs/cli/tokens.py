"""``ocs token create|list|revoke``: the API's tokens, managed offline on the business database,
and where the other commands find the token they send.

Theory of operation: these commands open the database of the configuration (``[database] url``,
or the default file in the data directory), migrate it if needed, and work on it directly, with no
server running: this is how the first admin token is made. ``create`` prints the token once (only
its SHA-256 is stored, ``ocs.db.tokens``); ``list`` never shows a token, only its id, name, role
and state; ``revoke`` applies at the server's next request with that token. Each create and revoke
is recorded in the audit trail, the actor being the local user (role ``local``).

The API commands send the token found first among: ``--token TEXT``; ``--token-file FILE``; the
``OCS_TOKEN`` environment variable; the file ``$XDG_CONFIG_HOME/ocs/token`` (by default
``~/.config/ocs/token``). A flag beats the environment, which beats the default file. Files hold
the token alone (surrounding white space ignored); a file others may read draws a warning, as
ssh does for keys, since the token is a password.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import stat
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.api.fields import ApiError, money_micros, parse_instant
from ocs.config import Settings
from ocs.db import audit, tokens
from ocs.db.audit import AuditEntry
from ocs.db.engine import DatabaseUnavailable, database_url, open_database
from ocs.db.tokens import Role, Token, TokenError
from ocs.rating.rate import format_money

TOKEN_VARIABLE = "OCS_TOKEN"
REFUSED = 1
_DURATION = re.compile(r"^([0-9]{1,6})([hd])$")


def default_token_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ocs" / "token"


def _read_token_file(path: Path) -> str:
    text = path.read_text(encoding="utf-8").strip()
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"ocs: warning: {path} may be read by others; chmod 600 it (the token is a password)", file=sys.stderr)
    return text


def find_token(given: str | None, token_file: Path | None, environ: dict[str, str] | None = None) -> str | None:
    """The token the API commands send (see the module's docstring for the order); None when none.
    OSError when ``--token-file`` names a file that cannot be read."""
    variables = os.environ if environ is None else environ
    if given:
        return given.strip()
    if token_file is not None:
        return _read_token_file(token_file)
    if variables.get(TOKEN_VARIABLE, "").strip():
        return variables[TOKEN_VARIABLE].strip()
    default = default_token_file()
    return _read_token_file(default) if default.is_file() else None


# -- argument types ---------------------------------------------------------------------------


def expiry(text: str) -> datetime:
    """``--expires``: ISO 8601, epoch seconds, or a time from now: ``12h``, ``90d``."""
    match = _DURATION.match(text.strip())
    if match is not None:
        count, unit = int(match.group(1)), match.group(2)
        return datetime.now(UTC) + (timedelta(hours=count) if unit == "h" else timedelta(days=count))
    try:
        return parse_instant(text, "--expires")
    except ApiError as error:
        raise argparse.ArgumentTypeError(f"{error.message}, or a time from now such as 12h or 90d") from None


def limit(text: str) -> int:
    try:
        micros = money_micros(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if micros < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a limit is 0 or more")
    return micros


def add_token_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser("token", help="make, list and revoke API tokens (offline, on the database)")
    actions = token.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a token and print it (once)")
    create.add_argument("--role", required=True, choices=[role.value for role in Role])
    create.add_argument("--name", required=True, help="who holds it (a person, a system)")
    create.add_argument("--account", help="self-care: the account the token may see")
    create.add_argument("--adjust-limit", type=limit, help="care: its own limit per adjustment, e.g. 20.00")
    create.add_argument("--expires", type=expiry, help="ISO 8601, epoch seconds, or from now: 12h, 90d")
    listing = actions.add_parser("list", help="every token: id, name, role, state (never the token)")
    listing.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="as JSON")
    revoke = actions.add_parser("revoke", help="revoke a token by id: from now on it gets 401")
    revoke.add_argument("token_id", type=int)


# -- the commands -------------------------------------------------------------------------------


def _state(token: Token) -> str:
    if token.revoked_at is not None:
        return "revoked"
    return "expired" if token.refusal(datetime.now(UTC)) is not None else "valid"


def _token_json(token: Token) -> dict[str, object]:
    def moment(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "token_id": token.token_id,
        "name": token.name,
        "role": token.role.value,
        "account_id": token.account_id,
        "adjust_limit": format_money(token.adjust_limit_micros) if token.adjust_limit_micros is not None else None,
        "created_at": moment(token.created_at),
        "expires_at": moment(token.expires_at),
        "revoked_at": moment(token.revoked_at),
        "state": _state(token),
    }


def _local_entry(action: str, token: Token, before: dict[str, object] | None) -> AuditEntry:
    after = {key: value for key, value in _token_json(token).items() if key != "state"}
    return AuditEntry(
        occurred_at=datetime.now(UTC),
        token_id=None,
        actor_name=f"cli:{getpass.getuser()}",
        actor_role="local",
        method="CLI",
        route=f"ocs token {action}",
        resource_id=f"token:{token.token_id}",
        status=0,
        outcome="applied",
        before=before,
        after=after,
    )


async def run_token_command(arguments: argparse.Namespace, settings: Settings) -> int:
    try:
        engine = await open_database(database_url(settings))
    except DatabaseUnavailable as error:
        print(f"ocs token: {error}", file=sys.stderr)
        return REFUSED
    try:
        return await _run(engine, arguments)
    finally:
        await engine.dispose()


async def _run(engine: AsyncEngine, arguments: argparse.Namespace) -> int:
    if arguments.action == "create":
        try:
            token, secret = await tokens.create(
                engine,
                name=arguments.name,
                role=Role(arguments.role),
                account_id=arguments.account,
                adjust_limit_micros=arguments.adjust_limit,
                expires_at=arguments.expires,
            )
        except TokenError as error:
            print(f"ocs token create: {error}", file=sys.stderr)
            return REFUSED
        await audit.record(engine, [_local_entry("create", token, None)])
        print(f"ocs: token {token.token_id} ({token.name}, {token.role}) made; it is shown once:", file=sys.stderr)
        print(secret)
        return 0
    if arguments.action == "list":
        listed = [_token_json(token) for token in await tokens.list_tokens(engine)]
        if getattr(arguments, "json", False):
            print(json.dumps(listed, indent=2))
        for item in [] if getattr(arguments, "json", False) else listed:
            extra = "".join(
                f" {name}={item[name]}" for name in ("account_id", "adjust_limit", "expires_at") if item[name]
            )
            print(f"{item['token_id']:>5} {item['role']:<9} {item['state']:<7} {item['name']}{extra}")
        return 0
    found = {token.token_id: token for token in await tokens.list_tokens(engine)}.get(arguments.token_id)
    revoked = await tokens.revoke(engine, arguments.token_id)
    if found is None or revoked is None:
        print(f"ocs token revoke: no token {arguments.token_id}", file=sys.stderr)
        return REFUSED
    if found.revoked_at is None:
        await audit.record(engine, [_local_entry("revoke", revoked, {"revoked_at": None})])
    print(f"ocs: token {revoked.token_id} ({revoked.name}) revoked")
    return 0
