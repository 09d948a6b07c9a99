"""Each setting declared once: its flag, its ADPULSE_* variable, default, parser, help, secrecy.

A process's settings are one frozen dataclass whose fields are declared with `option(...)` (or a
shared declaration's `Setting.field()`). From those declarations come the argparse flags
(`add_arguments`, with the variable and the default in each flag's help, as uvicorn shows them),
the values (`resolve_all`: the flag if given, else the variable, else the default) and the
README's configuration tables (`markdown_table`, compared with the README by a test). Nothing
else reads the environment.

    @dataclass(frozen=True, slots=True)
    class ExporterSettings:
        port: int = option("--port", "ADPULSE_EXPORTER_PORT", 9108, parse_port, "port to listen on")

    settings = ExporterSettings(**resolve_all(args, env, declarations(ExporterSettings)))
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

from adpulse.core.click_ids import ClickKeys

T = TypeVar("T")

_METADATA_KEY = "adpulse.setting"
MASK = "**********"


class SettingError(ValueError):
    """A flag or ADPULSE_* variable has a value that cannot be used."""

    def __init__(self, name: str, value: str, reason: str) -> None:
        super().__init__(f"{name}={value!r}: {reason}")
        self.name = name
        self.value = value
        self.reason = reason


class Secret:
    """A token or key: masked in its repr and str (so in logs and tracebacks); `reveal()` gives it.

    >>> token = Secret("s3cret")
    >>> f"{token}", repr(token), token.reveal()
    ('**********', "Secret('**********')", 's3cret')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)


Action = Literal["value", "switch", "repeated"]


@dataclass(frozen=True, slots=True)
class Setting(Generic[T]):
    """One setting: where its value comes from, what it defaults to, and how it is checked.

    `parse` turns the text of the flag or variable into the value and raises ValueError with a
    reason a person can act on. `shown_default` says the default in words where the value does not
    (`1 GiB`, `a temporary directory`). A `secret` comes from the environment only, so that it never
    shows in `ps`, and its value is never printed. A "switch" is a flag without a value (`--json`);
    a "repeated" flag may be given several times and `parse` reads one of its values.
    """

    flag: str | None
    env: str | None
    default: T
    parse: Callable[[str], Any]
    help: str
    secret: bool = False
    shown_default: str | None = None
    metavar: str | None = None
    action: Action = "value"
    name: str = ""
    """The settings object's field and the flag's argparse dest; `declarations` fills it in."""

    def __post_init__(self) -> None:
        if self.flag is None and self.env is None:
            raise ValueError(f"setting {self.name!r} has neither a flag nor a variable")
        if self.secret and (self.flag is not None or self.default is not None):
            raise ValueError(f"secret {self.env} comes from the environment only, with no default")
        if self.action != "value" and (self.flag is None or self.env is not None):
            raise ValueError(f"{self.flag}: a switch or a repeated flag is a flag only")

    @property
    def default_text(self) -> str | None:
        """The default as --help and the README state it; None when there is none to state."""
        if self.secret or self.action != "value":
            return None
        if self.shown_default is not None:
            return self.shown_default
        if self.default is None or self.default in ((), ""):
            return None
        return _plain(self.default)


def declare(setting: Setting[T]) -> T:
    """`setting` as a dataclass field of a settings object, its default included.

    >>> @dataclass(frozen=True)
    ... class Settings:
    ...     log_level: str = declare(LOG_LEVEL)
    """
    default: T = setting.default
    return dataclasses.field(default=default, metadata={_METADATA_KEY: setting})


def option(
    flag: str | None,
    env: str | None,
    default: T,
    parse: Callable[[str], T],
    help: str,
    *,
    shown_default: str | None = None,
    metavar: str | None = None,
) -> T:
    """A settings field declared by its flag, variable, default, parser and help."""
    setting = Setting(flag, env, default, parse, help, shown_default=shown_default, metavar=metavar)
    return declare(setting)


def switch(flag: str, help: str) -> bool:
    """A settings field that is True when its flag is given."""
    return declare(Setting(flag, None, False, _no_text, help, action="switch"))


def repeated(flag: str, parse: Callable[[str], T], help: str, metavar: str) -> tuple[T, ...]:
    """A settings field from a flag that may be given several times, each value read by `parse`."""
    none: tuple[T, ...] = ()
    return declare(Setting(flag, None, none, parse, help, metavar=metavar, action="repeated"))


def declarations(cls: type[Any]) -> tuple[Setting[Any], ...]:
    """The settings declared by the fields of settings class `cls`, in field order."""
    declared = []
    for field in dataclasses.fields(cls):
        setting = field.metadata.get(_METADATA_KEY)
        if setting is not None:
            declared.append(dataclasses.replace(setting, name=field.name))
    return tuple(declared)


def declared(cls: type[Any], name: str) -> Setting[Any]:
    """The declaration of field `name` of settings class `cls`, e.g. to derive another from it."""
    for setting in declarations(cls):
        if setting.name == name:
            return setting
    raise KeyError(f"{cls.__name__} declares no setting {name!r}")


def add_arguments(
    parser: argparse.ArgumentParser, settings: Iterable[Setting[Any]], default: Any = None
) -> None:
    """One flag per setting, its help ending in its variable and default; the settings read from
    the environment only are listed in the parser's epilog.

    Flags are declared without argparse `type=` so that a flag and its variable go through the
    same `parse`, and a bad value is reported under the name the user typed. `default` is what
    argparse stores for a flag not given (`argparse.SUPPRESS` for a parent parser shared by
    subcommands, so that a subcommand does not overwrite a value given before it).
    """
    environment_only = []
    for setting in settings:
        if setting.flag is None:
            text = setting.default_text
            shown = f" (default {text})" if text is not None else ""
            environment_only.append(f"{setting.env}{shown}: {_plain_help(setting)}")
        elif setting.action == "switch":
            parser.add_argument(
                setting.flag,
                dest=setting.name,
                action="store_true",
                default=default if default is not None else False,
                help=help_text(setting),
            )
        else:
            parser.add_argument(
                setting.flag,
                dest=setting.name,
                action="append" if setting.action == "repeated" else "store",
                default=default,
                metavar=setting.metavar or setting.flag.lstrip("-").upper().replace("-", "_"),
                help=help_text(setting),
            )
    if environment_only:
        lines = "; ".join(environment_only).replace("%", "%%")
        parser.epilog = f"Read from the environment only: {lines}."


def help_text(setting: Setting[Any]) -> str:
    """The --help text of a flag: what it does, then its variable and default, if any."""
    where = [setting.env] if setting.env else []
    default = setting.default_text
    if default is not None:
        where.append(f"default {default}")
    text = _plain_help(setting)
    if where:
        text += f" ({', '.join(where)})"
    return text.replace("%", "%%")


def resolve_all(
    args: argparse.Namespace, env: Mapping[str, str], settings: Iterable[Setting[Any]]
) -> dict[str, Any]:
    """Each setting's value by name: its flag if given, else its variable, else its default."""
    return {setting.name: resolve(args, env, setting) for setting in settings}


def resolve(args: argparse.Namespace, env: Mapping[str, str], setting: Setting[T]) -> T:
    """One setting's value: its flag if given, else its variable if set and not empty, else its
    default. A bad value raises SettingError under the name the user typed."""
    given = getattr(args, setting.name, None) if setting.flag is not None else None
    if setting.action == "switch":
        return bool(given)  # type: ignore[return-value]
    if setting.action == "repeated":
        return tuple(_parse(setting, str(setting.flag), text) for text in given or ())  # type: ignore[return-value]
    if given is not None and not isinstance(given, str):
        return given  # type: ignore[no-any-return]  # a namespace built in code
    if given is not None:
        return _parse(setting, str(setting.flag), given)
    raw = env.get(setting.env, "") if setting.env is not None else ""
    if raw == "":
        return setting.default
    return _parse(setting, str(setting.env), raw)


def is_given(args: argparse.Namespace, env: Mapping[str, str], setting: Setting[Any]) -> bool:
    """Whether the flag or the variable of `setting` was given (its default not used)."""
    if setting.flag is not None and getattr(args, setting.name, None) not in (None, False, []):
        return True
    return setting.env is not None and env.get(setting.env, "") != ""


def markdown_table(settings: Iterable[Setting[Any]]) -> str:
    """The README's configuration table of `settings`: variable, flag, default, meaning."""
    lines = ["| variable | flag | default | meaning |", "|---|---|---|---|"]
    for setting in settings:
        variable = f"`{setting.env}`" if setting.env else "(flag only)"
        flag = f"`{setting.flag}`" if setting.flag else "(environment only)"
        default = setting.default_text
        if setting.secret:
            shown = "unset (a secret)"
        elif setting.action == "switch":
            shown = "off"
        elif default is None:
            shown = "none"
        elif setting.shown_default is not None:
            shown = default  # words, not a value to type
        else:
            shown = f"`{default}`"
        meaning = setting.help.replace("|", "\\|")
        lines.append(f"| {variable} | {flag} | {shown} | {meaning} |")
    return "\n".join(lines) + "\n"


def _parse(setting: Setting[T], source: str, raw: str) -> T:
    try:
        value: T = setting.parse(raw)
    except ValueError as error:
        raise SettingError(source, MASK if setting.secret else raw, str(error)) from error
    return value


def _plain_help(setting: Setting[Any]) -> str:
    # The help is written for the README (Markdown); a terminal shows it without backticks.
    return setting.help.replace("`", "")


def _plain(value: object) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(_plain(item) for item in value)
    return str(value)


def _no_text(text: str) -> bool:
    raise ValueError("a switch takes no value")


# Parsers shared by several processes' settings.


def parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected one of true/false, yes/no, on/off, 1/0")


def parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def parse_port(raw: str) -> int:
    port = parse_int(raw)
    if not 0 <= port <= 65535:
        raise ValueError("a port is a number from 0 to 65535")
    return port


def parse_int(raw: str) -> int:
    try:
        return int(raw.strip().replace("_", ""))
    except ValueError:
        raise ValueError(f"{raw!r} is not a whole number") from None


def parse_positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number") from None
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def parse_log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError("one of DEBUG, INFO, WARNING, ERROR")
    return level


def parse_redis_url(text: str) -> str:
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("a Redis URL starts with redis://, rediss:// or unix://")
    return text


REDIS_CLUSTER_SCHEME = "redis+cluster://"
"""The scheme of ``ADPULSE_REDIS_URL`` for a Redis Cluster (`stream.cluster`)."""
REDIS_CLUSTER_TLS_SCHEME = "rediss+cluster://"
"""The same over TLS."""
_CLUSTER_SCHEMES: dict[str, str] = {
    REDIS_CLUSTER_SCHEME: "redis://",
    REDIS_CLUSTER_TLS_SCHEME: "rediss://",
}


def cluster_node_url(text: str) -> str | None:
    """The ``redis://`` (``rediss://``) URL of the node a Redis Cluster URL names, which
    redis-py's cluster client starts from; None for one instance's URL."""
    for scheme, plain in _CLUSTER_SCHEMES.items():
        if text.startswith(scheme):
            return plain + text.removeprefix(scheme)
    return None


def parse_store_url(text: str) -> str:
    """The KPI store's Redis: one instance (`parse_redis_url`) or, as
    ``redis+cluster://host:port`` (any node; ``rediss+cluster://`` over TLS), a Redis Cluster
    (`stream.cluster`), which has database 0 only."""
    node = cluster_node_url(text)
    if node is not None:
        parts = urlsplit(node)
        if not parts.netloc.rpartition("@")[2]:
            raise ValueError("a Redis Cluster URL names a node: redis+cluster://host:port")
        databases = [parts.path.strip("/") or "0", *parse_qs(parts.query).get("db", [])]
        if any(database != "0" for database in databases):
            raise ValueError(
                "a Redis Cluster has database 0 only: redis+cluster://host:port with no /N"
            )
        return text
    if "+cluster://" in text.partition("?")[0]:
        raise ValueError(
            "a Redis Cluster URL starts with redis+cluster:// or rediss+cluster:// (TLS)"
        )
    try:
        return parse_redis_url(text)
    except ValueError:
        raise ValueError(
            "a Redis URL starts with redis://, rediss:// or unix:// (one instance), or "
            "redis+cluster:// or rediss+cluster:// (a Redis Cluster)"
        ) from None


# Settings several processes share, declared here once; the README's first table lists them.

LOG_LEVEL = Setting(
    "--log-level",
    "ADPULSE_LOG_LEVEL",
    "INFO",
    parse_log_level,
    "`DEBUG`, `INFO`, `WARNING`, `ERROR`",
    name="log_level",
)
KAFKA = Setting(
    "--kafka",
    "ADPULSE_KAFKA",
    "localhost:9092",
    str,
    "Kafka bootstrap servers, `host:port[,...]`",
    name="kafka",
)
TOPIC = Setting(
    "--topic",
    "ADPULSE_TOPIC",
    "adpulse.events",
    str,
    "topic for valid events; invalid ones go to `TOPIC.rejected`",
    name="topic",
)
REGISTRY_TOPIC = Setting(
    "--registry-topic",
    "ADPULSE_REGISTRY_TOPIC",
    "adpulse.registry",
    str,
    "compacted topic that keeps the registries (coupons, tracked phone numbers) for "
    "`adpulse rebuild`",
    name="registry_topic",
)
REDIS_URL = Setting(
    "--redis-url",
    "ADPULSE_REDIS_URL",
    "redis://localhost:6379/0",
    parse_store_url,
    "the KPI store: the counters, the coupon registry and the attribution state; "
    "`redis+cluster://host:port` (`rediss+cluster://` over TLS) for a Redis Cluster "
    '(README, "Redis Cluster")',
    name="redis_url",
)


def parse_currency(text: str) -> str:
    """An ISO 4217 code of a circulating currency, in any case."""
    from adpulse.core.currencies import is_currency_code

    code = text.strip().upper()
    if not is_currency_code(code):
        raise ValueError("an ISO 4217 code such as USD or EUR")
    return code


CURRENCY = Setting(
    "--currency",
    "ADPULSE_CURRENCY",
    "USD",
    parse_currency,
    "reporting currency, ISO 4217",
    name="currency",
)
API_TOKEN: Setting[Secret | None] = Setting(
    None,
    "ADPULSE_API_TOKEN",
    None,
    Secret,
    "bearer token for `POST /v1/spend` (without it the endpoint answers 401), and on "
    "`POST /v1/events` to name channels not yet known",
    secret=True,
    name="api_token",
)

MIN_HASH_KEY_LENGTH = 32


def parse_hash_key(raw: str) -> Secret:
    """A hashing key: long enough that the hashes of phone numbers cannot be tried out."""
    if len(raw.strip()) < MIN_HASH_KEY_LENGTH:
        raise ValueError(
            f"at least {MIN_HASH_KEY_LENGTH} characters; make one with `openssl rand -hex 32`"
        )
    return Secret(raw.strip())


HASH_KEY: Setting[Secret | None] = Setting(
    None,
    "ADPULSE_HASH_KEY",
    None,
    parse_hash_key,
    "HMAC-SHA256 key the tracker hashes personal identifiers with (a customer id, a caller's "
    "number) before they reach Kafka or Redis; at least 32 characters, e.g. `openssl rand -hex "
    "32`. Keep it: a new key makes the same person a new hash. Without it, events with a "
    "`customer_id` and calls with a caller are refused",
    secret=True,
    name="hash_key",
)


# Signed click ids (`adpulse.core.click_ids`): the tracker signs, the worker verifies.
def parse_click_key(raw: str) -> Secret:
    """A click-signing key: long enough that its tags cannot be tried out."""
    if len(raw.strip()) < MIN_HASH_KEY_LENGTH:
        raise ValueError(
            f"at least {MIN_HASH_KEY_LENGTH} characters; make one with `openssl rand -hex 32`"
        )
    return Secret(raw.strip())


CLICK_KEY: Setting[Secret | None] = Setting(
    None,
    "ADPULSE_CLICK_KEY",
    None,
    parse_click_key,
    "HMAC-SHA256 key of the click ids the tracker issues (`/c`, the site snippet), which carry "
    "their channel, campaign and minute so that the worker attributes without a registry "
    "entry; the same key on trackers, workers and `adpulse rebuild`, at least 32 characters. "
    "Without it the tracker issues registry ids and the worker counts signed ids as rejected",
    secret=True,
    name="click_key",
)
CLICK_KEY_PREVIOUS: Setting[Secret | None] = Setting(
    None,
    "ADPULSE_CLICK_KEY_PREVIOUS",
    None,
    parse_click_key,
    "the click key before the current one: its ids are still accepted, so a rotation keeps "
    "it for the attribution window (`ADPULSE_ATTRIBUTION_DAYS`)",
    secret=True,
    name="click_key_previous",
)


def click_keys(current: Secret | None, previous: Secret | None) -> ClickKeys | None:
    """The keys of `CLICK_KEY` and `CLICK_KEY_PREVIOUS`; None without a current key."""
    if current is None:
        return None
    return ClickKeys(
        current.reveal().encode(), previous.reveal().encode() if previous is not None else None
    )


def parse_timezone(text: str) -> str:
    """An IANA time zone name, checked against the zone database."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = text.strip()
    try:
        return ZoneInfo(name).key
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"{name!r} is not an IANA time zone name (e.g. Europe/Berlin)") from error


TIMEZONE = Setting(
    "--timezone",
    "ADPULSE_TIMEZONE",
    "UTC",
    parse_timezone,
    "reporting time zone, an IANA name: days and months are its local dates",
    name="timezone",
)

SHARED = (
    KAFKA,
    REDIS_URL,
    TOPIC,
    API_TOKEN,
    HASH_KEY,
    CLICK_KEY,
    CLICK_KEY_PREVIOUS,
    CURRENCY,
    TIMEZONE,
    LOG_LEVEL,
    REGISTRY_TOPIC,
)
