"""Every ``dli-cancel`` subcommand and option explains itself, and every ``--help`` ends with
the exit codes (docs/cli.md documents the same list)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from cancel_handler import cli
from cancel_handler.cli.output import EXIT_CODES_HELP, FAILED, OK, RETRY, USAGE

REPO = Path(__file__).resolve().parents[2]


def parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    """Every (sub)parser with its command path and the help its parent gives it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                yield (*path, name), child, helps.get(name)
                yield from parsers(child, (*path, name))


ALL = list(parsers(cli._parser()))


def test_the_commands_of_spec_section_6_exist() -> None:
    names = {" ".join(path) for path, _, _ in ALL}
    assert {
        "demo",
        "serve",
        "cancel",
        "send",
        "simulator",
        "results",
        "config",
        "config check",
    } <= names


@pytest.mark.parametrize(("path", "parser", "summary"), ALL, ids=[" ".join(p) for p, _, _ in ALL])
def test_every_command_and_option_has_help(
    path: tuple[str, ...], parser: argparse.ArgumentParser, summary: str | None
) -> None:
    assert summary and len(summary) > 10, f"{path}: no summary in the command list"
    assert parser.description, f"{path}: no description"
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help and action.help.strip(), (
            f"{path}: {action.option_strings or action.dest}"
        )
    assert parser.epilog == EXIT_CODES_HELP


def test_help_exits_0_and_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for path, _, _ in [((), None, None), *ALL]:
        with pytest.raises(SystemExit) as exited:
            cli.main([*path, "--help"])
        assert exited.value.code == 0
        out = capsys.readouterr().out
        assert "exit codes:" in out
        for code in (OK, FAILED, USAGE, RETRY):
            assert re.search(rf"^  {code}\s", out, re.MULTILINE), (path, code)


def test_the_docs_list_the_same_exit_codes() -> None:
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    for code in (OK, FAILED, USAGE, RETRY, 130):
        assert re.search(rf"^\| `{code}` \|", text, re.MULTILINE), f"docs/cli.md: exit code {code}"


def test_the_exit_codes_follow_the_outcome_vocabulary() -> None:
    from cancel_handler.cli.output import SUCCESS_OUTCOMES
    from cancel_handler.outcomes import Outcome

    good = {str(o) for o in Outcome if o.good}
    assert good <= SUCCESS_OUTCOMES
    # awaiting_approval: a proposal is what was asked for (docs/approval.md)
    assert SUCCESS_OUTCOMES - good <= {"awaiting_approval"}
    assert not {str(o) for o in Outcome if not o.good} & SUCCESS_OUTCOMES
