"""Configuration: the only module that reads the environment.

``load_settings`` validates everything once and returns either a ``Settings`` or raises
``ConfigError`` listing every problem. Secret values are wrapped in ``Secret`` so that
``repr``/``str`` of any configuration object never shows them.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cancel_handler.approvals import KeyFileError, load_key_file
from cancel_handler.limits import LimitsError, RuntimeLimits, parse_runtime_limits

PROJECT_ID_RE = re.compile(r"^[0-9a-f]{32}$")
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}

# Every variable the function reads (the deploy drift test checks deploy.yaml against it).
KNOWN_VARIABLES = (
    "DLI_ENDPOINT",
    "DLI_REGION",
    "DLI_PROJECT_ID",
    "DLI_ALLOWED_PROJECT_IDS",
    "HUAWEICLOUD_SDK_AK",
    "HUAWEICLOUD_SDK_SK",
    "HUAWEICLOUD_SDK_SECURITY_TOKEN",
    "DLI_CREDENTIALS_FILE",
    "DLI_AUTH",
    "IAM_ENDPOINT",
    "IAM_USERNAME",
    "IAM_PASSWORD",
    "IAM_PASSWORD_FILE",
    "IAM_DOMAIN",
    "RESULT_TOPIC",
    "PUBSUB_EMULATOR_HOST",
    "GOOGLE_CLOUD_PROJECT",
    "DRY_RUN",
    "DLI_TIMEOUT_S",
    "DLI_MAX_ATTEMPTS",
    "DLI_RETRY_BASE_S",
    "DLI_RETRY_MAX_S",
    "DLI_EVENT_BUDGET_S",
    "RESULT_PUBLISH_TIMEOUT_S",
    "MAX_EVENT_AGE_S",
    "MAX_JOBS_PER_EVENT",
    "CANCEL_CONCURRENCY",
    "BUDGET_THRESHOLD",
    "BUDGET_TARGETS",
    "FANOUT_TOPIC",
    "FANOUT_THRESHOLD",
    "PUSH_AUDIENCE",
    "PUSH_SERVICE_ACCOUNT",
    "PUSH_CERTS_URL",
    "MAX_BODY_BYTES",
    "BUDGET_ACTION",
    "APPROVAL_KEY_FILE",
    "APPROVAL_TTL_S",
    "APPROVAL_BASE_URL",
    "DLI_LOCAL_RUN",
    "LOG_LEVEL",
    "RUNTIME_LIMITS",
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class Secret:
    """A string that never shows itself in ``repr``/``str``/f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


class CredentialsFileError(ValueError):
    """A credentials file is missing, unreadable or malformed (the message names no secret)."""


def read_credentials_file(path: str) -> tuple[str, str, str | None]:
    """``(ak, sk, security_token)`` from a JSON file ``{"ak", "sk", "security_token"?}``."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise CredentialsFileError(
            f"DLI_CREDENTIALS_FILE {path} unreadable: {exc.strerror}"
        ) from None
    except ValueError:
        raise CredentialsFileError(f"DLI_CREDENTIALS_FILE {path} is not valid JSON") from None
    if not isinstance(data, dict):
        raise CredentialsFileError(f"DLI_CREDENTIALS_FILE {path} must hold a JSON object")
    ak, sk, token = data.get("ak"), data.get("sk"), data.get("security_token")
    if not isinstance(ak, str) or not ak.strip() or not isinstance(sk, str) or not sk.strip():
        raise CredentialsFileError(
            f"DLI_CREDENTIALS_FILE {path} needs non-empty strings 'ak' and 'sk'"
        )
    if token is not None and not isinstance(token, str):
        raise CredentialsFileError(
            f"DLI_CREDENTIALS_FILE {path}: 'security_token' must be a string"
        )
    return ak.strip(), sk.strip(), (token.strip() or None) if token else None


def read_password_file(path: str) -> str:
    """The IAM password in ``path`` (surrounding whitespace and the final newline dropped)."""
    try:
        with open(path, encoding="utf-8") as handle:
            password = handle.read().strip()
    except OSError as exc:
        raise CredentialsFileError(f"IAM_PASSWORD_FILE {path} unreadable: {exc.strerror}") from None
    except ValueError:
        raise CredentialsFileError(f"IAM_PASSWORD_FILE {path} is not UTF-8 text") from None
    if not password:
        raise CredentialsFileError(f"IAM_PASSWORD_FILE {path} is empty")
    return password


class ConfigError(Exception):
    """The configuration is missing or contradictory; ``problems`` names each issue."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration: " + "; ".join(problems))


@dataclass(frozen=True)
class BudgetTarget:
    project_id: str | None
    queue_names: tuple[str, ...] = ()
    job_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class IamSettings:
    endpoint: str
    username: str
    password: Secret | None
    password_file: str | None
    domain: str


@dataclass(frozen=True)
class Settings:
    dli_endpoint: str
    default_project_id: str | None
    allowed_project_ids: frozenset[str]
    auth_mode: str  # "aksk" | "token"
    access_key: Secret | None = None
    secret_key: Secret | None = None
    security_token: Secret | None = None
    credentials_file: str | None = None
    iam: IamSettings | None = None
    result_topic: str | None = None
    pubsub_emulator_host: str | None = None  # local runs: the Pub/Sub emulator
    dry_run: bool = False
    dli_timeout_s: float = 10.0
    dli_max_attempts: int = 3
    retry_base_delay_s: float = 0.5
    retry_max_delay_s: float = 10.0
    event_budget_s: float = 45.0  # all DLI calls of one event, retries included
    publish_timeout_s: float = 30.0
    max_event_age_s: float = 3600.0
    max_jobs_per_event: int = 1000
    cancel_concurrency: int = 8
    budget_threshold: float = 1.0
    budget_targets: Mapping[str, BudgetTarget] = field(default_factory=dict)
    fanout_topic: str | None = None
    fanout_threshold: int = 100
    push_audience: str | None = None
    push_service_account: str | None = None
    push_certs_url: str = GOOGLE_CERTS_URL
    max_body_bytes: int = 65536
    budget_action: str = "cancel"  # "cancel" | "propose" (SPEC section 8)
    approval_key_file: str | None = None
    approval_ttl_s: int = 86400
    approval_base_url: str | None = None
    local_run: bool = False
    log_level: str = "INFO"
    runtime_limits: RuntimeLimits = field(default_factory=RuntimeLimits)  # the watchdog's


class _Reader:
    """Collects every problem instead of stopping at the first one."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def text(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def flag(self, name: str, default: bool) -> bool:
        raw = self.env.get(name)
        if raw is None:
            return default
        word = raw.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        self.problems.append(f"{name} must be true or false, got {raw!r}")
        return default

    def number(self, name: str, default: float, minimum: float, integer: bool = False) -> Any:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            kind = "an integer" if integer else "a number"
            self.problems.append(f"{name} must be {kind}, got {raw!r}")
            return default
        if not math.isfinite(value):  # nan compares false with everything: it would pass below
            self.problems.append(f"{name} must be a finite number, got {raw!r}")
            return default
        if value < minimum:
            self.problems.append(f"{name} must be >= {minimum}, got {raw!r}")
            return default
        return value

    def url(self, name: str, value: str) -> str | None:
        """``value`` when it is an https:// URL, or an http:// one to a loopback host (a local
        simulator or stand-in: nothing leaves the machine unencrypted)."""
        if _secure_url(value):
            return value
        self.problems.append(
            f"{name} must be an https:// URL (http:// only to a loopback host: localhost, "
            f"127.0.0.0/8, ::1), got {value!r}"
        )
        return None


def _secure_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        host, _ = parts.hostname, parts.port  # .port refuses a port that is no number
    except ValueError:
        return False
    if not host or any(c.isspace() for c in value):
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and _loopback(host))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(env: Mapping[str, str] | None = None, local_run: bool | None = None) -> Settings:
    """Read and validate the configuration; raise ``ConfigError`` naming every problem.
    ``local_run=True`` (CLI commands) prints results instead of requiring ``RESULT_TOPIC``."""
    source = os.environ if env is None else env
    r = _Reader(source)
    if local_run is None:
        local_run = r.flag("DLI_LOCAL_RUN", False)
    endpoint = _endpoint(r)
    default_project = _project_id(r, "DLI_PROJECT_ID")
    allowed = _allowed_projects(r, default_project)
    auth_mode = (r.text("DLI_AUTH") or "aksk").lower()
    access_key = secret_key = security_token = None
    credentials_file = r.text("DLI_CREDENTIALS_FILE")
    iam = None
    if auth_mode == "aksk":
        access_key, secret_key, security_token = _aksk(r, credentials_file)
    elif auth_mode == "token":
        iam = _iam(r)
    else:
        r.problems.append(f"DLI_AUTH must be 'aksk' or 'token', got {auth_mode!r}")
    result_topic = _result_topic(r, local_run)
    settings = Settings(
        dli_endpoint=endpoint or "",
        default_project_id=default_project,
        allowed_project_ids=allowed,
        auth_mode=auth_mode,
        access_key=access_key,
        secret_key=secret_key,
        security_token=security_token,
        credentials_file=credentials_file,
        iam=iam,
        result_topic=result_topic,
        pubsub_emulator_host=r.text("PUBSUB_EMULATOR_HOST"),
        dry_run=r.flag("DRY_RUN", False),
        dli_timeout_s=r.number("DLI_TIMEOUT_S", 10.0, 0.1),
        dli_max_attempts=r.number("DLI_MAX_ATTEMPTS", 3, 1, integer=True),
        retry_base_delay_s=r.number("DLI_RETRY_BASE_S", 0.5, 0),
        retry_max_delay_s=r.number("DLI_RETRY_MAX_S", 10.0, 0),
        event_budget_s=r.number("DLI_EVENT_BUDGET_S", 45.0, 0.1),
        publish_timeout_s=r.number("RESULT_PUBLISH_TIMEOUT_S", 30.0, 0.1),
        max_event_age_s=r.number("MAX_EVENT_AGE_S", 3600.0, 0),
        max_jobs_per_event=r.number("MAX_JOBS_PER_EVENT", 1000, 1, integer=True),
        cancel_concurrency=r.number("CANCEL_CONCURRENCY", 8, 1, integer=True),
        budget_threshold=r.number("BUDGET_THRESHOLD", 1.0, 0),
        budget_targets=_budget_targets(r),
        fanout_topic=_topic(r, "FANOUT_TOPIC"),
        fanout_threshold=r.number("FANOUT_THRESHOLD", 100, 1, integer=True),
        push_audience=r.text("PUSH_AUDIENCE"),
        push_service_account=r.text("PUSH_SERVICE_ACCOUNT"),
        push_certs_url=_certs_url(r),
        max_body_bytes=r.number("MAX_BODY_BYTES", 65536, 1024, integer=True),
        budget_action=_budget_action(r),
        approval_key_file=_approval_key_file(r),
        approval_ttl_s=r.number("APPROVAL_TTL_S", 86400, 1, integer=True),
        approval_base_url=_approval_base_url(r),
        local_run=local_run,
        log_level=_log_level(r),
        runtime_limits=_runtime_limits(r),
    )
    if settings.budget_action == "propose" and r.text("APPROVAL_KEY_FILE") is None:
        r.problems.append(
            "BUDGET_ACTION=propose needs APPROVAL_KEY_FILE (the keys that sign approval tokens)"
        )
    if settings.push_service_account and not settings.push_audience:
        r.problems.append("PUSH_SERVICE_ACCOUNT is set without PUSH_AUDIENCE: no token is checked")
    if settings.push_audience and not settings.push_service_account:
        r.problems.append(
            "PUSH_AUDIENCE is set without PUSH_SERVICE_ACCOUNT: any Google-signed token for that "
            "audience would be accepted"
        )
    if r.problems:
        raise ConfigError(_without_secrets(r.problems, source))
    return settings


_SECRET_VARIABLES = (
    "HUAWEICLOUD_SDK_AK",
    "HUAWEICLOUD_SDK_SK",
    "HUAWEICLOUD_SDK_SECURITY_TOKEN",
    "IAM_PASSWORD",
)


def _without_secrets(problems: list[str], env: Mapping[str, str]) -> list[str]:
    """Problems quote the values they refuse; a secret pasted into the wrong variable must not
    reach the log that way."""
    values = [env.get(name, "").strip() for name in _SECRET_VARIABLES]
    values = sorted((v for v in values if len(v) >= 4), key=len, reverse=True)
    masked = []
    for problem in problems:
        for value in values:
            problem = problem.replace(value, "**********")
        masked.append(problem)
    return masked


def _endpoint(r: _Reader) -> str | None:
    endpoint = r.text("DLI_ENDPOINT")
    region = r.text("DLI_REGION")
    if endpoint is None and region is not None:
        if not re.fullmatch(r"[a-z]{2}(-[a-z0-9]+)+", region):
            r.problems.append(f"DLI_REGION is not a region id: {region!r}")
            return None
        suffix = "eu" if region == "eu-west-101" else "com"
        endpoint = f"https://dli.{region}.myhuaweicloud.{suffix}"
    if endpoint is None:
        r.problems.append("DLI_ENDPOINT or DLI_REGION is required")
        return None
    if r.url("DLI_ENDPOINT", endpoint) is None:
        return None
    return endpoint.rstrip("/")


def _certs_url(r: _Reader) -> str:
    url = r.text("PUSH_CERTS_URL")
    if url is None:
        return GOOGLE_CERTS_URL
    return r.url("PUSH_CERTS_URL", url) or GOOGLE_CERTS_URL


def _project_id(r: _Reader, name: str) -> str | None:
    value = r.text(name)
    if value is not None and not PROJECT_ID_RE.match(value):
        r.problems.append(f"{name} must be 32 lower-case hex characters")
        return None
    return value


def _allowed_projects(r: _Reader, default_project: str | None) -> frozenset[str]:
    raw = r.text("DLI_ALLOWED_PROJECT_IDS")
    if raw is None:
        return frozenset([default_project]) if default_project else frozenset()
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    bad = [i for i in ids if not PROJECT_ID_RE.match(i)]
    if bad:
        r.problems.append(f"DLI_ALLOWED_PROJECT_IDS has ids that are not 32 hex: {bad}")
    return frozenset(i for i in ids if PROJECT_ID_RE.match(i))


def _aksk(
    r: _Reader, credentials_file: str | None
) -> tuple[Secret | None, Secret | None, Secret | None]:
    ak = r.text("HUAWEICLOUD_SDK_AK")
    sk = r.text("HUAWEICLOUD_SDK_SK")
    token = r.text("HUAWEICLOUD_SDK_SECURITY_TOKEN")
    if credentials_file is None:
        if ak is None or sk is None:
            pairs = (("HUAWEICLOUD_SDK_AK", ak), ("HUAWEICLOUD_SDK_SK", sk))
            missing = " and ".join(name for name, value in pairs if not value)
            r.problems.append(f"AK/SK credentials missing: set {missing} or DLI_CREDENTIALS_FILE")
    else:
        # The file wins over the variables; checked now so a bad mount is reported at start.
        try:
            read_credentials_file(credentials_file)
        except CredentialsFileError as error:
            r.problems.append(str(error))
    return (
        Secret(ak) if ak else None,
        Secret(sk) if sk else None,
        Secret(token) if token else None,
    )


def _iam(r: _Reader) -> IamSettings | None:
    endpoint = r.text("IAM_ENDPOINT")
    username = r.text("IAM_USERNAME")
    password = r.text("IAM_PASSWORD")
    password_file = r.text("IAM_PASSWORD_FILE")
    domain = r.text("IAM_DOMAIN")
    missing = [
        name
        for name, value in (
            ("IAM_ENDPOINT", endpoint),
            ("IAM_USERNAME", username),
            ("IAM_PASSWORD or IAM_PASSWORD_FILE", password or password_file),
            ("IAM_DOMAIN", domain),
        )
        if not value
    ]
    if missing:
        r.problems.append("DLI_AUTH=token needs " + ", ".join(missing))
        return None
    assert endpoint and username and domain
    if r.url("IAM_ENDPOINT", endpoint) is None:
        return None
    if password_file:
        # IAM_PASSWORD_FILE wins over IAM_PASSWORD; it is read again for every token.
        try:
            read_password_file(password_file)
        except CredentialsFileError as error:
            r.problems.append(str(error))
            return None
    return IamSettings(
        endpoint=endpoint.rstrip("/").removesuffix("/v3"),
        username=username,
        password=Secret(password) if password else None,
        password_file=password_file,
        domain=domain,
    )


def _budget_action(r: _Reader) -> str:
    action = (r.text("BUDGET_ACTION") or "cancel").lower()
    if action not in ("cancel", "propose"):
        r.problems.append(f"BUDGET_ACTION must be 'cancel' or 'propose', got {action!r}")
        return "cancel"
    return action


def _approval_key_file(r: _Reader) -> str | None:
    """The path, once the file is known to hold valid keys (checked now, so a bad mount is
    reported at start; the function reads it again when it changes)."""
    path = r.text("APPROVAL_KEY_FILE")
    if path is None:
        return None
    try:
        load_key_file(path)
    except KeyFileError as error:
        r.problems.append(str(error))
        return None
    return path


def _approval_base_url(r: _Reader) -> str | None:
    """The approval page's URL: https (http only on a loopback host, for local runs), no
    query or fragment (the page's query is added to it)."""
    url = r.text("APPROVAL_BASE_URL")
    if url is None:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        r.problems.append(f"APPROVAL_BASE_URL is not a URL, got {url!r}")
        return None
    loopback = parts.hostname in ("localhost", "::1") or (parts.hostname or "").startswith("127.")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        r.problems.append(
            f"APPROVAL_BASE_URL must be an https:// URL (http only on loopback), got {url!r}"
        )
        return None
    if not parts.netloc or parts.query or parts.fragment:
        r.problems.append(f"APPROVAL_BASE_URL must be a URL without query or fragment, got {url!r}")
        return None
    return url


@dataclass(frozen=True)
class LogSettings:
    level: str = "INFO"
    gcp_project: str | None = None  # trace ids become projects/P/traces/T


def load_log_settings(env: Mapping[str, str] | None = None) -> LogSettings:
    """What logging needs at start, read even when the rest of the configuration is wrong
    (so that the error is logged): a bad ``LOG_LEVEL`` gives INFO here, and ``load_settings``
    reports it with the other problems."""
    r = _Reader(os.environ if env is None else env)
    return LogSettings(_log_level(r), r.text("GOOGLE_CLOUD_PROJECT"))


def _log_level(r: _Reader) -> str:
    raw = r.text("LOG_LEVEL")
    if raw is None:
        return "INFO"
    if raw.upper() not in LOG_LEVELS:
        r.problems.append(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
        return "INFO"
    return raw.upper()


def topic_path(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """A full topic path for a bare name, in ``GOOGLE_CLOUD_PROJECT`` or ``PUBSUB_PROJECT_ID``."""
    source = os.environ if env is None else env
    project = source.get("GOOGLE_CLOUD_PROJECT") or source.get("PUBSUB_PROJECT_ID")
    return _topic_path(name, project)


def _topic_path(name: str | None, gcp_project: str | None) -> str | None:
    if name is None or name.startswith("projects/"):
        return name
    return f"projects/{gcp_project}/topics/{name}" if gcp_project else None


def _result_topic(r: _Reader, local_run: bool) -> str | None:
    if r.text("RESULT_TOPIC") is None and not local_run:
        r.problems.append("RESULT_TOPIC is required (or DLI_LOCAL_RUN=true to print results)")
    return _topic(r, "RESULT_TOPIC")


def _topic(r: _Reader, name: str) -> str | None:
    """A topic variable as a full path: ``projects/P/topics/T``, or a bare name in
    ``GOOGLE_CLOUD_PROJECT``; None when unset or wrong (the problem is recorded)."""
    raw = r.text(name)
    if raw is None:
        return None
    path = _topic_path(raw, r.text("GOOGLE_CLOUD_PROJECT"))
    if path is None:
        r.problems.append(f"{name} is a bare name: set GOOGLE_CLOUD_PROJECT or a full path")
    elif not re.fullmatch(r"projects/[^/]+/topics/[^/]+", path):
        r.problems.append(f"{name} must look like projects/P/topics/T, got {raw!r}")
        return None
    return path


def _runtime_limits(r: _Reader) -> RuntimeLimits:
    try:
        return parse_runtime_limits(r.text("RUNTIME_LIMITS"))
    except LimitsError as error:
        r.problems.extend(error.problems)
        return RuntimeLimits()


def _budget_targets(r: _Reader) -> dict[str, BudgetTarget]:
    raw = r.text("BUDGET_TARGETS")
    if raw is None:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        r.problems.append("BUDGET_TARGETS is not valid JSON")
        return {}
    if not isinstance(parsed, dict):
        r.problems.append("BUDGET_TARGETS must be a JSON object of budgetId -> target")
        return {}
    targets: dict[str, BudgetTarget] = {}
    for budget_id, spec in parsed.items():
        target = _budget_target(r, str(budget_id), spec)
        if target is not None:
            targets[str(budget_id)] = target
    return targets


def _budget_target(r: _Reader, budget_id: str, spec: Any) -> BudgetTarget | None:
    where = f"BUDGET_TARGETS[{budget_id!r}]"
    if not isinstance(spec, dict):
        r.problems.append(f"{where} must be an object")
        return None
    project = spec.get("project_id")
    queues = spec.get("queue_names", [])
    jobs = spec.get("job_ids", [])
    ok = True
    if project is not None and (not isinstance(project, str) or not PROJECT_ID_RE.match(project)):
        r.problems.append(f"{where}.project_id must be 32 hex characters")
        ok = False
    for name, values in (("queue_names", queues), ("job_ids", jobs)):
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            r.problems.append(f"{where}.{name} must be a list of strings")
            ok = False
    if ok and not queues and not jobs:
        r.problems.append(f"{where} names no queue_names and no job_ids")
        ok = False
    if not ok:
        return None
    return BudgetTarget(project_id=project, queue_names=tuple(queues), job_ids=tuple(jobs))
