"""``dli-cancel config check``: the configuration validated as the function does at start,
run as an operator runs it (a subprocess with only the given environment)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.ops_support import dli_cancel

PROJECT = "0123456789abcdef0123456789abcdef"
SECRET_KEY = "config-check-secret-4f2a9b"


def good_env(tmp_path: Path) -> dict[str, str]:
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({"ak": "AKCONFIGCHECK", "sk": SECRET_KEY}))
    return {
        "DLI_ENDPOINT": "https://dli.eu-de.otc.t-systems.com",
        "DLI_PROJECT_ID": PROJECT,
        "DLI_CREDENTIALS_FILE": str(credentials),
        "RESULT_TOPIC": "projects/acme-ops/topics/dli-cancel-results",
        "DRY_RUN": "true",
    }


def test_a_good_configuration_is_summarised_without_secrets(tmp_path: Path) -> None:
    done = dli_cancel("config", "check", env=good_env(tmp_path))

    assert done.returncode == 0, done.stderr
    assert "configuration OK" in done.stderr
    shown = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert shown["dli_endpoint"] == "https://dli.eu-de.otc.t-systems.com"
    assert shown["result_topic"] == "projects/acme-ops/topics/dli-cancel-results"
    assert shown["dry_run"] == "True" and shown["auth"] == "aksk"
    assert SECRET_KEY not in done.stdout + done.stderr


def test_every_problem_is_listed_and_the_exit_code_is_2(tmp_path: Path) -> None:
    env = {
        **good_env(tmp_path),
        "DLI_CREDENTIALS_FILE": str(tmp_path / "missing.json"),
        "DLI_TIMEOUT_S": "soon",
    }
    del env["RESULT_TOPIC"]

    done = dli_cancel("config", "check", env=env)

    assert done.returncode == 2
    problems = [line.strip()[2:] for line in done.stderr.splitlines() if line.startswith("  - ")]
    assert len(problems) == 3, done.stderr
    assert any("missing.json" in p and "unreadable" in p for p in problems)
    assert any(p.startswith("DLI_TIMEOUT_S must be a number") for p in problems)
    assert any(p.startswith("RESULT_TOPIC is required") for p in problems)
    assert done.stdout == ""


def test_json_output_for_scripts(tmp_path: Path) -> None:
    ok = dli_cancel("config", "check", "--json", env=good_env(tmp_path))
    bad = dli_cancel("config", "check", "--json", env={"DLI_LOCAL_RUN": "true"})

    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    assert json.loads(ok.stdout)["settings"]["default_project_id"] == PROJECT
    assert bad.returncode == 2
    report = json.loads(bad.stdout)
    assert report["ok"] is False and "DLI_ENDPOINT or DLI_REGION is required" in report["problems"]
