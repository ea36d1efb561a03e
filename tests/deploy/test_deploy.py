"""deploy.yaml (Cloud Build) against the code, the spec and the gcloud reference.

Nothing here touches Google Cloud. The checks, cheapest first:

- Cloud Build syntax: every ``${_X}`` used is declared and every declared one used; every other
  ``$`` is ``$$`` (a literal dollar for bash) or a built-in substitution; step ids and
  ``waitFor`` are consistent, and nothing is created or deployed before the tests passed.
- The function's environment (the ``config`` step's ``env``): only variables the code reads,
  every required one, no secret values, mounted secrets where the code looks for them, and
  ``load_settings`` accepts it; the step's own script, run here, validates and writes the env
  file the deploy steps read.
- Entry points and topics: against ``main.py`` (its decorators, parsed with ``ast``) and SPEC
  section 2 (``job-timeout``, ``budget-exceeded``).
- Every ``gcloud`` call (also inside bash scripts): its flags are in a fixed list per command,
  copied from ``gcloud <command> --help`` (Google Cloud SDK 528.0.0) and the gcloud reference;
  and, where gcloud is installed, gcloud itself parses each call offline (no credentials, API
  endpoints pointed at a closed local port): an argument error fails the test, the "no active
  account" error that follows a successful parse passes it.
- Every topic has a consumer: the build's steps run (their bash scripts against a stand-in
  gcloud that records its calls), with and without ``_FANOUT_TOPIC``; every topic they create
  is a trigger of a deployed event function or has a subscription (the result topic excepted:
  it is the output), and every event function gets invoker rights and a dead-letter policy.
- The uploaded function source (``.gcloudignore-function``): main.py, requirements.txt and
  every module main.py reaches, nothing else; main.py never reaches the local tools
  (dli_simulator, devstack, bench).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cancel_handler.config import KNOWN_VARIABLES, load_settings
from tests.e2e_support import TRIGGER_TOPICS

REPO = Path(__file__).resolve().parents[2]
DEPLOY_PATH = REPO / "deploy.yaml"
FUNCTION_IGNORE_FILE = ".gcloudignore-function"

SPEC_TOPICS = ("job-timeout", "budget-exceeded")  # SPEC section 2: fixed names
EVENT_ENTRY_POINT = "cancel_dli_job"  # SPEC section 1
HTTP_ENTRY_POINT = "cancel_dli_job_http"
CURRENT_RUNTIMES = ("python313", "python314")  # GA (docs.cloud.google.com/run/docs/runtimes/python)
MAX_EVENT_TIMEOUT_S = (
    540  # event-driven functions (cloud.google.com/functions/docs/configuring/timeout)
)

# Built-in substitutions that a `gcloud builds submit` build always has (repository ones such as
# $COMMIT_SHA exist only for triggered builds, so deploy.yaml must not rely on them).
BUILTINS = {
    "PROJECT_ID": "drift-test-project",
    "PROJECT_NUMBER": "123456789012",
    "BUILD_ID": "0000-build",
    "LOCATION": "europe-west3",
}
DLI_PROJECT = "0123456789abcdef0123456789abcdef"
# Values an operator must give (their defaults are empty on purpose).
OPERATOR_VALUES = {
    "_DLI_ENDPOINT": "https://dli.eu-de.otc.t-systems.com",
    "_DLI_PROJECT_ID": DLI_PROJECT,
}

# Variables set by the platform, which a deployment must not set (Cloud Run "reserved
# environment variables"; X_GOOGLE_ is a refused prefix).
RESERVED_VARIABLES = {
    "PORT",
    "K_SERVICE",
    "K_REVISION",
    "FUNCTION_TARGET",
    "FUNCTION_SIGNATURE_TYPE",
}
# Secret values come from mounted Secret Manager files, never from the environment.
SECRET_VARIABLES = {
    "HUAWEICLOUD_SDK_AK",
    "HUAWEICLOUD_SDK_SK",
    "HUAWEICLOUD_SDK_SECURITY_TOKEN",
    "IAM_PASSWORD",
}

# Flags per gcloud command, from `gcloud <command> --help` (SDK 528.0.0) and
# https://cloud.google.com/sdk/gcloud/reference. Add a flag only after checking it there.
GCLOUD_WIDE_FLAGS = {
    "--access-token-file",
    "--account",
    "--billing-project",
    "--configuration",
    "--flags-file",
    "--flatten",
    "--format",
    "--help",
    "--impersonate-service-account",
    "--log-http",
    "--project",
    "--quiet",
    "--trace-token",
    "--user-output-enabled",
    "--verbosity",
}
KNOWN_FLAGS: dict[tuple[str, ...], set[str]] = {
    ("functions", "deploy"): {
        "--allow-unauthenticated",
        "--no-allow-unauthenticated",
        "--binary-authorization",
        "--build-env-vars-file",
        "--build-service-account",
        "--build-worker-pool",
        "--concurrency",
        "--cpu",
        "--docker-repository",
        "--egress-settings",
        "--entry-point",
        "--env-vars-file",
        "--gen2",
        "--ignore-file",
        "--ingress-settings",
        "--kms-key",
        "--max-instances",
        "--memory",
        "--min-instances",
        "--region",
        "--retry",
        "--run-service-account",
        "--runtime",
        "--runtime-update-policy",
        "--security-level",
        "--serve-all-traffic-latest-revision",
        "--service-account",
        "--set-build-env-vars",
        "--set-env-vars",
        "--set-secrets",
        "--source",
        "--stage-bucket",
        "--timeout",
        "--trigger-bucket",
        "--trigger-event",
        "--trigger-event-filters",
        "--trigger-event-filters-path-pattern",
        "--trigger-http",
        "--trigger-location",
        "--trigger-resource",
        "--trigger-service-account",
        "--trigger-topic",
        "--update-env-vars",
        "--update-labels",
        "--update-secrets",
        "--vpc-connector",
    },
    ("functions", "describe"): {"--region", "--v2"},
    ("functions", "add-invoker-policy-binding"): {"--region", "--member"},
    ("eventarc", "triggers", "describe"): {"--location"},
    ("pubsub", "topics", "describe"): set(),
    ("pubsub", "topics", "create"): {
        "--labels",
        "--message-retention-duration",
        "--message-storage-policy-allowed-regions",
        "--topic-encryption-key",
    },
    ("pubsub", "topics", "add-iam-policy-binding"): {"--member", "--role"},
    ("pubsub", "subscriptions", "describe"): set(),
    ("pubsub", "subscriptions", "create"): {
        "--topic",
        "--ack-deadline",
        "--dead-letter-topic",
        "--max-delivery-attempts",
        "--expiration-period",
        "--message-retention-duration",
        "--min-retry-delay",
        "--max-retry-delay",
        "--labels",
    },
    ("pubsub", "subscriptions", "update"): {
        "--ack-deadline",
        "--dead-letter-topic",
        "--max-delivery-attempts",
        "--clear-dead-letter-policy",
        "--expiration-period",
        "--message-retention-duration",
        "--min-retry-delay",
        "--max-retry-delay",
        "--update-labels",
    },
    ("pubsub", "subscriptions", "add-iam-policy-binding"): {"--member", "--role"},
    ("scheduler", "jobs", "describe"): {"--location"},
    ("scheduler", "jobs", "create", "http"): {
        "--location",
        "--schedule",
        "--uri",
        "--attempt-deadline",
        "--description",
        "--headers",
        "--http-method",
        "--max-backoff",
        "--max-doublings",
        "--max-retry-attempts",
        "--max-retry-duration",
        "--min-backoff",
        "--time-zone",
        "--message-body",
        "--message-body-from-file",
        "--oauth-service-account-email",
        "--oauth-token-scope",
        "--oidc-service-account-email",
        "--oidc-token-audience",
    },
    ("scheduler", "jobs", "update", "http"): {
        "--location",
        "--schedule",
        "--uri",
        "--attempt-deadline",
        "--description",
        "--http-method",
        "--time-zone",
        "--clear-time-zone",
        "--update-headers",
        "--remove-headers",
        "--clear-headers",
        "--message-body",
        "--message-body-from-file",
        "--clear-message-body",
        "--oauth-service-account-email",
        "--oauth-token-scope",
        "--oidc-service-account-email",
        "--oidc-token-audience",
        "--clear-auth-token",
        "--max-backoff",
        "--max-doublings",
        "--max-retry-attempts",
        "--max-retry-duration",
        "--min-backoff",
        "--clear-max-backoff",
        "--clear-max-doublings",
        "--clear-max-retry-attempts",
        "--clear-max-retry-duration",
        "--clear-min-backoff",
    },
}

# Shell variables of deploy.yaml's bash steps, with stand-in values for the offline gcloud runs.
SHELL_VARIABLES = {
    "topic": "dli-cancel-results",
    "sub": "projects/drift-test-project/subscriptions/eventarc-europe-west3-dli-cancel-sub-123",
    "fn": "dli-cancel-job-timeout",
    "trigger": "projects/drift-test-project/locations/europe-west3/triggers/dli-cancel-123",
    "agent": "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com",
    "job": "dli-cancel-sweep",
    "sa": "dli-cancel-scheduler@drift-test-project.iam.gserviceaccount.com",
    "uri": "https://pubsub.googleapis.com/v1/projects/drift-test-project/topics/job-timeout:publish",
    "body": '{"messages":[{"data":"e30=","attributes":{"event_type":"job-timeout"}}]}',
    "schedule": "*/5 * * * *",
    "zone": "Etc/UTC",
}
# A bash step that ends in this line runs `gcloud` with the step's arguments after $0 and $1.
EXEC_GCLOUD = 'exec gcloud "$$@"'
NO_ACCOUNT = "You do not currently have an active account selected"


# -- reading deploy.yaml ---------------------------------------------------------------------


def load_deploy() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEPLOY_PATH.read_text(encoding="utf-8"))
    return data


DEPLOY = load_deploy()
STEPS: list[dict[str, Any]] = DEPLOY["steps"]
DECLARED: dict[str, str] = DEPLOY["substitutions"]

_REFERENCE = re.compile(r"\$\$|\$\{([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)|\$")


def substitution_values(**overrides: str) -> dict[str, str]:
    """The declared defaults, the operator's required values, the built-ins, then overrides."""
    return {**DECLARED, **OPERATOR_VALUES, **BUILTINS, **overrides}


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Cloud Build's substitution: ``$$`` -> ``$``, ``${X}`` / ``$X`` -> the value."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(2)
        if not name:
            raise AssertionError(f"bare $ in {text!r}: write $$ for a literal dollar")
        return values[name]

    return _REFERENCE.sub(replace, text)


def references(text: str) -> list[str]:
    """Every substitution ``text`` uses (``$$`` excluded); ``"$"`` marks a bare dollar."""
    found = []
    for match in _REFERENCE.finditer(text):
        if match.group(0) != "$$":
            found.append(match.group(1) or match.group(2) or "$")
    return found


def step_strings(step: Mapping[str, Any]) -> Iterator[str]:
    """The fields Cloud Build substitutes: name, entrypoint, dir, args, env."""
    for key in ("name", "entrypoint", "dir"):
        if key in step:
            yield str(step[key])
    yield from (str(a) for a in step.get("args", []))
    yield from (str(e) for e in step.get("env", []))


def step(step_id: str) -> dict[str, Any]:
    [found] = [s for s in STEPS if s.get("id") == step_id]
    return found


def function_env(
    values: Mapping[str, str] | None = None, keep_empty: bool = False
) -> dict[str, str]:
    """The function's environment: the config step's ``env``, substituted."""
    values = values or substitution_values()
    env = {}
    for entry in step("config")["env"]:
        name, _, value = substitute(entry, values).partition("=")
        env[name] = value
    return env if keep_empty else {k: v for k, v in env.items() if v.strip()}


@dataclass
class GcloudCall:
    step_id: str
    argv: list[str]  # after "gcloud"
    substituted: bool = False  # True for calls read from a bash script (already substituted)

    @property
    def command(self) -> tuple[str, ...]:
        matches = [c for c in KNOWN_FLAGS if tuple(self.argv[: len(c)]) == c]
        assert matches, f"step {self.step_id}: unknown gcloud command {self.argv[:3]}"
        return max(matches, key=len)

    @property
    def flags(self) -> dict[str, str | None]:
        result: dict[str, str | None] = {}
        for token in self.argv:
            if token.startswith("--"):
                name, eq, value = token.partition("=")
                result[name] = value if eq else None
        return result

    def multi(self, flag: str) -> list[str]:
        return [t.partition("=")[2] for t in self.argv if t.startswith(flag + "=")]

    @property
    def positionals(self) -> list[str]:
        return [t for t in self.argv[len(self.command) :] if not t.startswith("--")]

    def resolved(self, values: Mapping[str, str]) -> list[str]:
        """Substitutions applied, then shell variables replaced by their stand-ins."""
        tokens = self.argv if self.substituted else [substitute(t, values) for t in self.argv]
        return [_shell_expand(t, self.step_id) for t in tokens]


def _shell_expand(token: str, step_id: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in SHELL_VARIABLES, f"step {step_id}: add ${name} to SHELL_VARIABLES"
        return SHELL_VARIABLES[name]

    return re.sub(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)", replace, token)


_SHELL_OPERATOR = re.compile(r"^[();<>|&]+$")


def _script_calls(step_id: str, script: str) -> Iterator[GcloudCall]:
    """The ``gcloud`` commands of a bash script, one per occurrence (also inside ``$( )``)."""
    text = script.replace("\\\n", " ")
    for line in text.splitlines():
        if line.strip().startswith("#") or EXEC_GCLOUD.replace("$$", "$") in line:
            continue
        for match in re.finditer(r"(?:^|(?<=[\s(|&;]))gcloud\s", line):
            lexer = shlex.shlex(line[match.end() :], posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            argv: list[str] = []
            for token in lexer:
                if _SHELL_OPERATOR.match(token):
                    break
                argv.append(token)
            yield GcloudCall(step_id, argv, substituted=True)


def gcloud_calls(values: Mapping[str, str] | None = None) -> list[GcloudCall]:
    """Every gcloud call in deploy.yaml. Bash scripts are read after substitution (their
    ``$$`` become ``$``); plain gcloud steps keep their ``${_X}`` until ``resolved``."""
    values = values or substitution_values()
    calls = []
    for s in STEPS:
        args = [str(a) for a in s.get("args", [])]
        if s.get("entrypoint") == "gcloud":
            calls.append(GcloudCall(s["id"], args))
        elif s.get("entrypoint") == "bash" and args[:1] == ["-c"]:
            script = args[1]
            if EXEC_GCLOUD in script:
                calls.append(GcloudCall(s["id"], args[4:]))
            calls.extend(_script_calls(s["id"], substitute(script, values)))
    return calls


def deploy_calls(values: Mapping[str, str] | None = None) -> list[GcloudCall]:
    return [c for c in gcloud_calls(values) if c.command == ("functions", "deploy")]


def resolved_flags(call: GcloudCall, values: Mapping[str, str] | None = None) -> dict[str, Any]:
    values = values or substitution_values()
    return GcloudCall(call.step_id, call.resolved(values), substituted=True).flags


def event_deploys() -> list[GcloudCall]:
    return [c for c in deploy_calls() if "--trigger-topic" in c.flags]


def http_deploys() -> list[GcloudCall]:
    return [c for c in deploy_calls() if "--trigger-http" in c.flags]


def main_entry_points() -> dict[str, str]:
    """``main.py``'s functions -> ``cloud_event`` / ``http`` (their functions_framework
    decorator)."""
    tree = ast.parse((REPO / "main.py").read_text(encoding="utf-8"))
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                if (
                    isinstance(decorator, ast.Attribute)
                    and isinstance(decorator.value, ast.Name)
                    and decorator.value.id == "functions_framework"
                ):
                    found[node.name] = decorator.attr
    return found


def seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"write durations in seconds, like 300s: {duration!r}"
    return int(match.group(1))


# -- Cloud Build syntax ----------------------------------------------------------------------


def test_substitutions_declared_and_used() -> None:
    used = {
        name
        for s in STEPS
        for text in step_strings(s)
        for name in references(text)
        if name.startswith("_")
    }
    assert set(DECLARED) - used == set(), "declared but never used"
    assert used - set(DECLARED) == set(), "used but not declared"
    for name, value in DECLARED.items():
        assert re.fullmatch(r"_[A-Z][A-Z0-9_]*", name), name
        assert isinstance(value, str), f"{name}: quote the value, Cloud Build wants strings"


def test_every_other_dollar_is_escaped_or_a_builtin() -> None:
    for s in STEPS:
        for text in step_strings(s):
            for name in references(text):
                assert name != "$", f"step {s['id']}: bare $ in {text!r}: write $$"
                assert name.startswith("_") or name in BUILTINS, (
                    f"step {s['id']}: ${name} is no substitution a submitted build has; "
                    "a bash variable must be written $$name"
                )


def test_steps_wait_for_the_tests() -> None:
    ids = [s["id"] for s in STEPS]
    assert len(ids) == len(set(ids))
    waits = {s["id"]: s.get("waitFor", []) for s in STEPS}
    for step_id, wait_for in waits.items():
        for other in wait_for:
            assert other == "-" or other in waits, f"{step_id} waits for unknown {other}"

    def ancestors(step_id: str) -> set[str]:
        found: set[str] = set()
        todo = [w for w in waits[step_id] if w != "-"]
        while todo:
            current = todo.pop()
            if current not in found:
                found.add(current)
                todo.extend(w for w in waits[current] if w != "-")
        return found

    for step_id in ids:
        if step_id not in ("config", "test"):
            assert {"config", "test"} <= ancestors(step_id), f"{step_id} may run untested"
    assert {"deploy-job-timeout", "deploy-budget-exceeded"} <= ancestors("dead-letter")


def test_test_step_runs_the_unit_tests_on_the_runtime_python() -> None:
    test = step("test")
    runtime = DECLARED["_RUNTIME"]
    assert runtime in CURRENT_RUNTIMES
    assert test["name"] == f"python:3.{runtime.removeprefix('python3')}-slim"
    assert step("config")["name"] == test["name"]
    script = test["args"][1]
    assert "--require-hashes -r requirements-dev.lock" in script
    assert '-m "not emulator"' in script, "no gcloud in this image: deselect the e2e tests"
    assert "unset CI" in script, "CI=true would turn skipped emulator tests into failures"
    assert "CI=true" not in json.dumps(STEPS), "nothing may set CI=true in the build"


# -- the function's environment --------------------------------------------------------------


def _strings_read_by_config() -> set[str]:
    tree = ast.parse((REPO / "cancel_handler" / "config.py").read_text(encoding="utf-8"))
    known = {
        id(c)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "KNOWN_VARIABLES" for t in node.targets)
        for c in ast.walk(node)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in known
    }


def test_environment_names_are_read_by_the_code() -> None:
    names = set(function_env(keep_empty=True))
    assert names <= set(KNOWN_VARIABLES), "not a variable the function reads"
    assert names <= _strings_read_by_config(), "in KNOWN_VARIABLES but not read by config.py"
    assert not names & RESERVED_VARIABLES
    assert not any(n.startswith("X_GOOGLE_") for n in names)
    assert not names & SECRET_VARIABLES, "secrets come from mounted Secret Manager files"


def test_required_configuration_is_set() -> None:
    names = set(function_env(keep_empty=True))
    assert {"DLI_ENDPOINT", "DLI_REGION"} & names
    assert {"DLI_PROJECT_ID", "RESULT_TOPIC"} <= names
    env = function_env()
    if env.get("DLI_AUTH", "aksk") == "aksk":
        assert "DLI_CREDENTIALS_FILE" in env
    else:
        assert {"IAM_ENDPOINT", "IAM_USERNAME", "IAM_DOMAIN", "IAM_PASSWORD_FILE"} <= set(env)


SECRET_FILES = {  # variable -> a stand-in for the mounted file's content
    "DLI_CREDENTIALS_FILE": '{"ak": "AK", "sk": "SK"}',
    "IAM_PASSWORD_FILE": "pw",
    "APPROVAL_KEY_FILE": "stand-in-approval-key-0123456789abcdef\n",
}


def _settings_env(env: Mapping[str, str], tmp_path: Path) -> dict[str, str]:
    """``env`` with the mounted secret files replaced by files in ``tmp_path``."""
    result = dict(env)
    for name, content in SECRET_FILES.items():
        if name in result:
            stand_in = tmp_path / f"{name}-{Path(result[name]).name}"
            stand_in.write_text(content)
            result[name] = str(stand_in)
    return result


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"_DLI_ENDPOINT": "", "_DLI_REGION": "eu-west-101"},
        {
            "_DRY_RUN": "false",
            "_DLI_ALLOWED_PROJECT_IDS": f"{DLI_PROJECT},fedcba9876543210fedcba9876543210",
            "_FANOUT_TOPIC": "dli-cancel-fanout",
            "_BUDGET_TARGETS": json.dumps({"*": {"queue_names": ["etl", "adhoc"]}}),
        },
        {
            "_BUDGET_ACTION": "propose",
            "_APPROVAL_TTL_S": "3600",
            "_APPROVAL_BASE_URL": "https://europe-west3-p.cloudfunctions.net/dli-cancel-http",
        },
    ],
    ids=["endpoint", "region", "live", "propose"],
)
def test_load_settings_accepts_the_deployed_environment(
    overrides: dict[str, str], tmp_path: Path
) -> None:
    values = substitution_values(**overrides)
    env = function_env(values)
    settings = load_settings(_settings_env(env, tmp_path), local_run=False)

    project = BUILTINS["PROJECT_ID"]
    assert settings.result_topic == f"projects/{project}/topics/{values['_RESULT_TOPIC']}"
    assert settings.default_project_id == DLI_PROJECT
    assert settings.dry_run is (values["_DRY_RUN"] == "true")
    assert settings.auth_mode == "aksk" and settings.credentials_file
    assert not settings.local_run
    if values["_FANOUT_TOPIC"]:
        assert settings.fanout_topic == f"projects/{project}/topics/{values['_FANOUT_TOPIC']}"
        assert len(settings.budget_targets) == 1
        assert len(settings.allowed_project_ids) == 2
    assert settings.budget_action == values["_BUDGET_ACTION"]
    assert settings.approval_ttl_s == int(values["_APPROVAL_TTL_S"])
    assert settings.approval_base_url == (values["_APPROVAL_BASE_URL"] or None)
    assert settings.approval_key_file  # mounted in both modes


def test_budget_events_cancel_unless_told_to_propose() -> None:
    assert DECLARED["_BUDGET_ACTION"] == "cancel"
    assert DECLARED["_APPROVAL_KEY_SECRET"]
    env = function_env()
    assert env["BUDGET_ACTION"] == "cancel"
    assert env["APPROVAL_KEY_FILE"].startswith("/")


def test_dry_run_is_the_default() -> None:
    assert DECLARED["_DRY_RUN"] == "true"
    assert DECLARED["_DEPLOY_HTTP"] in ("true", "false")


def _run_config_step(tmp_path: Path, values: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    config = step("config")
    assert config["entrypoint"] == "python" and config["args"][0] == "-c"
    script = substitute(config["args"][1], values)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        **function_env(values, True),
    }
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_config_step_writes_the_env_file_the_deploys_read(tmp_path: Path) -> None:
    values = substitution_values(_BUDGET_TARGETS='{"*": {"queue_names": ["a", "b"]}}')
    done = _run_config_step(tmp_path, values)
    assert done.returncode == 0, done.stderr

    [env_file] = {c.flags["--env-vars-file"] for c in deploy_calls()}
    assert env_file and "/" not in env_file
    written = yaml.safe_load((tmp_path / env_file).read_text(encoding="utf-8"))
    assert written == function_env(values)
    assert all(isinstance(v, str) for v in written.values())
    assert "BUDGET_TARGETS" in done.stdout and "DLI_CREDENTIALS_FILE" in done.stdout


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"_DLI_PROJECT_ID": ""}, "set _DLI_PROJECT_ID"),
        ({"_DLI_ENDPOINT": ""}, "DLI_ENDPOINT or DLI_REGION is required"),
        ({"_DLI_PROJECT_ID": "not-a-project"}, "DLI_PROJECT_ID must be 32 lower-case hex"),
        ({"_DRY_RUN": "maybe"}, "DRY_RUN must be true or false"),
        ({"_BUDGET_TARGETS": "{not json"}, "BUDGET_TARGETS is not valid JSON"),
        ({"_BUDGET_ACTION": "ask"}, "BUDGET_ACTION must be 'cancel' or 'propose'"),
        ({"_APPROVAL_BASE_URL": "http://fn.example.com"}, "APPROVAL_BASE_URL must be an https"),
    ],
)
def test_config_step_stops_a_bad_configuration(
    tmp_path: Path, overrides: dict[str, str], problem: str
) -> None:
    done = _run_config_step(tmp_path, substitution_values(**overrides))
    assert done.returncode != 0
    assert problem in done.stderr
    assert not list(tmp_path.glob("*.yaml")), "nothing may be written for a bad configuration"


# -- what is deployed ------------------------------------------------------------------------


def test_entry_points_match_main_py() -> None:
    entry_points = main_entry_points()
    assert entry_points == {EVENT_ENTRY_POINT: "cloud_event", HTTP_ENTRY_POINT: "http"}
    for call in event_deploys():
        assert entry_points[call.flags["--entry-point"] or ""] == "cloud_event"
    for call in http_deploys():
        assert entry_points[call.flags["--entry-point"] or ""] == "http"
    assert len(http_deploys()) == 1


def test_one_event_function_per_spec_topic() -> None:
    assert tuple(TRIGGER_TOPICS) == SPEC_TOPICS
    topics = [c.flags["--trigger-topic"] or "" for c in event_deploys()]
    assert sorted(topics) == sorted([*SPEC_TOPICS, "${_FANOUT_TOPIC}"])  # fan-out: when set
    names = [c.positionals[0] for c in event_deploys()]
    assert len(set(names)) == len(names)
    topics_script = step("topics")["args"][1]
    for topic in SPEC_TOPICS:
        assert f" {topic} " in topics_script, f"the topics step must create {topic}"


def test_every_deploy_is_private_and_identical_in_configuration() -> None:
    shared = None
    for call in deploy_calls():
        flags = resolved_flags(call)
        assert "--gen2" in flags
        assert "--no-allow-unauthenticated" in flags and "--allow-unauthenticated" not in flags
        assert flags["--ingress-settings"] == "internal-only"
        assert flags["--runtime"] in CURRENT_RUNTIMES
        assert flags["--service-account"] == (
            f"{DECLARED['_RUNTIME_SA']}@{BUILTINS['PROJECT_ID']}.iam.gserviceaccount.com"
        )
        assert flags["--source"] == "."
        assert flags["--ignore-file"] == FUNCTION_IGNORE_FILE
        assert "--set-env-vars" not in flags and "--update-env-vars" not in flags
        config = {
            k: v
            for k, v in flags.items()
            if k not in ("--entry-point", "--trigger-topic", "--trigger-http", "--retry")
            and not k.startswith("--trigger-service-account")
        }
        config["--set-secrets"] = call.multi("--set-secrets")
        shared = shared or config
        assert config == shared, f"{call.step_id} differs from the other deploys"
    for call in event_deploys():
        flags = resolved_flags(call)
        assert "--retry" in flags
        assert flags["--trigger-service-account"] == (
            f"{DECLARED['_TRIGGER_SA']}@{BUILTINS['PROJECT_ID']}.iam.gserviceaccount.com"
        )
    for call in http_deploys():
        assert "--retry" not in call.flags


def test_secrets_are_mounted_where_the_configuration_points() -> None:
    env = function_env()
    expected = {env[n] for n in SECRET_FILES if n in env}
    assert env["APPROVAL_KEY_FILE"] in expected
    for call in deploy_calls():
        secrets = call.multi("--set-secrets")
        assert secrets, f"{call.step_id}: no --set-secrets"
        mounts = {}
        for item in ",".join(secrets).split(","):
            path, _, ref = item.partition("=")
            assert path.startswith("/"), f"{item}: mount secrets as files, not variables"
            assert ref.endswith(":latest"), f"{item}: a mounted file follows :latest (rotation)"
            mounts[path] = ref
        assert set(mounts) == expected
        directories = [str(Path(p).parent) for p in mounts]
        assert len(set(directories)) == len(directories), "one secret per mount directory"


def test_timeout_leaves_room_for_the_retries(tmp_path: Path) -> None:
    settings = load_settings(_settings_env(function_env(), tmp_path), local_run=False)
    attempts, per_try = settings.dli_max_attempts, settings.dli_timeout_s
    one_call = attempts * per_try + (attempts - 1) * settings.retry_max_delay_s
    # the cancel and the status read after a 4xx (or the event's budget for DLI calls, where
    # the configuration has one), then the result publish
    dli_calls = min(2 * one_call, getattr(settings, "event_budget_s", 2 * one_call))
    needed = dli_calls + settings.publish_timeout_s
    for call in deploy_calls():
        timeout = seconds(resolved_flags(call)["--timeout"])
        assert needed <= timeout <= MAX_EVENT_TIMEOUT_S, (call.step_id, needed, timeout)


def test_dead_letter_policy_comes_after_the_event_age_limit() -> None:
    attempts = int(DECLARED["_MAX_DELIVERY_ATTEMPTS"])
    assert 5 <= attempts <= 100  # Pub/Sub's range
    # --retry: exponential backoff from 10 s, capped at 600 s (best effort, so approximate)
    waited = sum(min(10 * 2**i, 600) for i in range(attempts - 1))
    assert waited > int(DECLARED["_MAX_EVENT_AGE_S"]), (
        "the dead-letter topic would take events the function still retries on its own"
    )


def test_trigger_identity_may_invoke_each_event_function() -> None:
    bindings = [
        c for c in gcloud_calls() if c.command == ("functions", "add-invoker-policy-binding")
    ]
    assert sorted(c.positionals[0] for c in bindings) == sorted(
        c.positionals[0] for c in event_deploys()
    )
    for call in bindings:
        assert resolved_flags(call)["--member"] == (
            f"serviceAccount:{DECLARED['_TRIGGER_SA']}@{BUILTINS['PROJECT_ID']}"
            ".iam.gserviceaccount.com"
        )


# -- every topic has a consumer (the build's scripts run against a stand-in gcloud) -----------

STAND_IN_GCLOUD = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["GCLOUD_CALLS"], "a", encoding="utf-8") as log:
    log.write(json.dumps(args) + "\\n")
if args[:3] in (["pubsub", "topics", "describe"], ["pubsub", "subscriptions", "describe"]):
    sys.exit(1)  # nothing exists yet: the build creates it
if "describe" in args:
    print("projects/drift-test-project/locations/europe-west3/stand-in")
"""


def run_step(step_id: str, values: Mapping[str, str], workdir: Path) -> list[list[str]]:
    """The gcloud calls a step makes with these substitutions: a ``gcloud`` step's own, or
    those its bash script makes when run against a stand-in gcloud that records them."""
    found = step(step_id)
    args = [substitute(str(a), values) for a in found.get("args", [])]
    if found["entrypoint"] == "gcloud":
        return [args]
    assert found["entrypoint"] == "bash" and args[0] == "-c", step_id
    bin_dir = workdir / "bin"
    bin_dir.mkdir(exist_ok=True)
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(STAND_IN_GCLOUD.format(python=sys.executable), encoding="utf-8")
    gcloud.chmod(0o755)
    log = workdir / f"{step_id}.calls"
    log.unlink(missing_ok=True)
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "GCLOUD_CALLS": str(log)}
    done = subprocess.run(
        ["bash", *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"step {step_id}: {done.stderr}"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def built(values: Mapping[str, str], workdir: Path) -> dict[str, list[list[str]]]:
    """The gcloud calls of every step that makes any (not ``config`` and ``test``), by id."""
    return {
        s["id"]: run_step(s["id"], values, workdir)
        for s in STEPS
        if s["id"] not in ("config", "test")
    }


def flag(argv: list[str], name: str) -> str | None:
    values = [a.partition("=")[2] for a in argv if a.startswith(name + "=")]
    return values[0] if values else None


def event_functions(calls: dict[str, list[list[str]]]) -> dict[str, list[str]]:
    """The event-driven functions the build deploys: name -> its deploy call."""
    deploys = [c for cs in calls.values() for c in cs if c[:2] == ["functions", "deploy"]]
    return {c[2]: c for c in deploys if flag(c, "--trigger-topic")}


FANOUT_VALUES = ["", "dli-cancel-fanout"]


@pytest.mark.parametrize("fanout", FANOUT_VALUES, ids=["no-fanout", "fanout"])
def test_every_topic_the_build_creates_has_a_consumer(fanout: str, tmp_path: Path) -> None:
    values = substitution_values(_FANOUT_TOPIC=fanout)
    calls = built(values, tmp_path)

    created = {c[3] for c in calls["topics"] if c[:3] == ["pubsub", "topics", "create"]}
    triggers = {flag(c, "--trigger-topic") for c in event_functions(calls).values()}
    subscribed = {
        flag(c, "--topic") for cs in calls.values() for c in cs if c[:3] == SUBSCRIPTION_CREATE
    }
    # The result topic is the function's output: the operator's systems consume it.
    unconsumed = created - triggers - subscribed - {values["_RESULT_TOPIC"]}
    assert not unconsumed, f"topics nothing consumes: messages sent there are lost: {unconsumed}"
    assert set(SPEC_TOPICS) <= triggers
    env_fanout = function_env(values).get("FANOUT_TOPIC", "")
    assert env_fanout == fanout
    assert (fanout in created) is bool(fanout) and (fanout in triggers) is bool(fanout)


SUBSCRIPTION_CREATE = ["pubsub", "subscriptions", "create"]


def test_fanout_shares_go_to_an_event_function_like_the_others(tmp_path: Path) -> None:
    values = substitution_values(_FANOUT_TOPIC="dli-cancel-fanout")
    functions = event_functions(built(values, tmp_path))
    [consumer] = [
        c for c in functions.values() if flag(c, "--trigger-topic") == "dli-cancel-fanout"
    ]
    [budget] = [c for c in functions.values() if flag(c, "--trigger-topic") == "budget-exceeded"]

    assert flag(consumer, "--entry-point") == EVENT_ENTRY_POINT == flag(budget, "--entry-point")
    assert "--retry" in consumer  # a share that meets a transient fault comes again
    unlike = {"--trigger-topic"}
    assert {a for a in consumer[3:] if a.partition("=")[0] not in unlike} == {
        a for a in budget[3:] if a.partition("=")[0] not in unlike
    }


@pytest.mark.parametrize("fanout", FANOUT_VALUES, ids=["no-fanout", "fanout"])
def test_each_event_function_gets_invoker_rights_and_a_dead_letter_policy(
    fanout: str, tmp_path: Path
) -> None:
    values = substitution_values(_FANOUT_TOPIC=fanout)
    calls = built(values, tmp_path)
    functions = set(event_functions(calls))

    invokers = {
        c[2]
        for cs in calls.values()
        for c in cs
        if c[:2] == ["functions", "add-invoker-policy-binding"]
    }
    described = {c[2] for c in calls["dead-letter"] if c[:2] == ["functions", "describe"]}
    updates = [c for c in calls["dead-letter"] if c[:3] == ["pubsub", "subscriptions", "update"]]
    assert invokers == functions
    assert described == functions
    assert len(updates) == len(functions)
    assert all(flag(c, "--dead-letter-topic") == values["_DEAD_LETTER_TOPIC"] for c in updates)
    assert ("dli-cancel-fanout" in functions) is bool(fanout)


# -- gcloud flags ----------------------------------------------------------------------------


def test_every_gcloud_flag_is_known() -> None:
    calls = gcloud_calls()
    assert len(calls) >= 10
    for call in calls:
        allowed = KNOWN_FLAGS[call.command] | GCLOUD_WIDE_FLAGS
        unknown = set(call.flags) - allowed
        assert not unknown, f"step {call.step_id}: {call.command}: unknown flags {unknown}"
        assert len(call.positionals) == 1, (
            f"step {call.step_id}: one resource name, and --flag=value for every value: "
            f"{call.positionals}"
        )


def _isolated_gcloud_env(config_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLOUDSDK_", "GOOGLE_", "GCE_")) and k != "BOTO_CONFIG"
    }
    env.update(
        {
            "CLOUDSDK_CONFIG": str(config_dir),
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
            "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
            "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
            "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        }
    )
    # Should credentials turn up anyway, no request can leave this machine.
    apis = ("CLOUDFUNCTIONS", "PUBSUB", "EVENTARC", "RUN", "IAM", "STORAGE", "CLOUDBUILD")
    for api in (*apis, "CLOUDSCHEDULER"):
        env[f"CLOUDSDK_API_ENDPOINT_OVERRIDES_{api}"] = "http://127.0.0.1:9/"
    return env


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud not installed")
def test_gcloud_parses_every_call_offline(tmp_path: Path) -> None:
    values = substitution_values(_FANOUT_TOPIC="dli-cancel-fanout")
    workdir = tmp_path / "workspace"
    workdir.mkdir()
    assert _run_config_step(workdir, values).returncode == 0
    shutil.copy(REPO / FUNCTION_IGNORE_FILE, workdir / FUNCTION_IGNORE_FILE)
    (workdir / "main.py").write_text("")
    config_dir = tmp_path / "gcloud-config"
    config_dir.mkdir()
    env = _isolated_gcloud_env(config_dir)
    gcloud = shutil.which("gcloud") or "gcloud"

    def run(call: GcloudCall) -> tuple[GcloudCall, list[str], str]:
        argv = call.resolved(values)
        done = subprocess.run(
            [gcloud, *argv], cwd=workdir, env=env, capture_output=True, text=True, timeout=120
        )
        return call, argv, done.stderr

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(run, gcloud_calls(values)))
    for call, argv, stderr in outcomes:
        assert NO_ACCOUNT in stderr, f"step {call.step_id}: gcloud {shlex.join(argv)}\n{stderr}"


# -- the uploaded source ---------------------------------------------------------------------


# The repository's own packages: imports of these are followed.
FIRST_PARTY = ("cancel_handler", "dli_simulator", "devstack", "bench")
LOCAL_TOOLS = ("dli_simulator/", "devstack/", "bench/")


def _module_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] in FIRST_PARTY}


def _module_file(module: str, root: Path) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def reachable_files(root: Path) -> set[str]:
    """main.py and every first-party file it imports, directly or not (lazy imports too)."""
    seen: set[str] = set()
    todo = [root / "main.py"]
    while todo:
        path = todo.pop()
        rel = path.relative_to(root).as_posix()
        if rel in seen:
            continue
        seen.add(rel)
        for module in _module_imports(path):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):  # packages' __init__ run too
                found = _module_file(".".join(parts[:i]), root)
                if found is not None:
                    todo.append(found)
    return seen


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud not installed")
def test_uploaded_source_is_what_the_function_needs(tmp_path: Path) -> None:
    copy = tmp_path / "src"
    ignore = shutil.ignore_patterns(".git", ".venv", ".tools", "*_cache", ".hypothesis")
    shutil.copytree(REPO, copy, ignore=ignore)
    (copy / "dli-cancel.env.yaml").write_text("{}")  # the config step's output
    shutil.copy(copy / FUNCTION_IGNORE_FILE, copy / ".gcloudignore")
    done = subprocess.run(
        [shutil.which("gcloud") or "gcloud", "meta", "list-files-for-upload", str(copy)],
        env=_isolated_gcloud_env(tmp_path / "gcloud-config"),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    uploaded = {Path(line.strip()).as_posix() for line in done.stdout.splitlines() if line.strip()}

    assert {"main.py", "requirements.txt"} <= uploaded
    missing = reachable_files(REPO) - uploaded
    assert not missing, f"the function imports files that are not uploaded: {missing}"
    for path in uploaded:
        assert path in ("main.py", "requirements.txt") or path.startswith("cancel_handler/")


def test_function_never_imports_the_local_tools() -> None:
    reached = reachable_files(REPO)
    assert "cancel_handler/handler.py" in reached and "cancel_handler/entry.py" in reached
    assert not [f for f in reached if f.startswith(LOCAL_TOOLS)]
    assert all(f == "main.py" or f.startswith("cancel_handler/") for f in reached)


def test_runtime_lock_carries_the_framework() -> None:
    text = (REPO / "requirements.txt").read_text(encoding="utf-8")
    assert re.search(r"^functions-framework==", text, re.MULTILINE)
    assert "--hash=sha256:" in text
