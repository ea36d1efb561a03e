"""The real gcloud, offline: find the gcloud commands in a shell script and let gcloud's own
argument parser check them, with no credentials and every API pointed at a closed port.

Shared by the deploy drift test (deploy.yaml's steps) and the docs test (every shell block of
README.md and docs/ that names gcloud). A command that parses stops at "no active account"
(or, for a command that needs none, at the closed port); an argument error fails the check.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

NO_ACCOUNT = "You do not currently have an active account selected"
# What gcloud says when a parsed command reached for the (closed) API endpoint.
UNREACHABLE = ("Failed to establish a new connection", "Connection refused")
_APIS = (
    "BILLINGBUDGETS",
    "CLOUDBUILD",
    "CLOUDFUNCTIONS",
    "CLOUDRESOURCEMANAGER",
    "CLOUDSCHEDULER",
    "EVENTARC",
    "IAM",
    "LOGGING",
    "MONITORING",
    "PUBSUB",
    "RUN",
    "SECRETMANAGER",
    "SERVICEUSAGE",
    "STORAGE",
)
_SHELL_OPERATOR = re.compile(r"^[();<>|&]+$")


def gcloud_path() -> str | None:
    return shutil.which("gcloud")


def isolated_gcloud_env(config_dir: Path) -> dict[str, str]:
    """gcloud with its own empty configuration; should credentials turn up anyway, no request
    can leave this machine."""
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
    for api in _APIS:
        env[f"CLOUDSDK_API_ENDPOINT_OVERRIDES_{api}"] = "http://127.0.0.1:9/"
    return env


def script_gcloud_calls(script: str) -> Iterator[list[str]]:
    """The arguments (after ``gcloud``) of every gcloud command in a shell script, one per
    occurrence, also inside ``$( )`` and after a pipe; comment lines are skipped. Backslash
    continuations are joined; shell quoting is undone as bash would."""
    lines = script.replace("\\\n", " ").splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith("#"):
            continue
        for match in re.finditer(r"(?:^|(?<=[\s(|&;{]))gcloud\s", line):
            yield _arguments(line[match.end() :], lines[index + 1 :])


def _arguments(rest: str, following: list[str]) -> list[str]:
    """The words of one command: up to a shell operator or the end of the line, unless a
    quote runs on into the following lines."""
    for extra in range(len(following) + 1):
        text = "\n".join([rest, *following[:extra]])
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        argv: list[str] = []
        try:
            for token in lexer:
                if _SHELL_OPERATOR.match(token):
                    break
                argv.append(token)
        except ValueError:  # "No closing quotation": the quote goes on below
            continue
        return argv
    raise ValueError(f"unterminated quote in: gcloud {rest}")


def parse_offline(calls: Sequence[Sequence[str]], cwd: Path, config_dir: Path) -> list[str]:
    """Run each call through the real gcloud, offline; returns what each printed on stderr
    (a parsed call ends in ``NO_ACCOUNT``, or in ``UNREACHABLE`` for one that needs no
    account)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    env = isolated_gcloud_env(config_dir)
    gcloud = gcloud_path() or "gcloud"

    def run(argv: Sequence[str]) -> str:
        done = subprocess.run(
            [gcloud, *argv],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.stderr

    with ThreadPoolExecutor(max_workers=6) as pool:
        return list(pool.map(run, calls))


def parsed(stderr: str) -> bool:
    """Whether gcloud got past its argument parser (and stopped for want of an account or a
    network)."""
    return NO_ACCOUNT in stderr or any(text in stderr for text in UNREACHABLE)
