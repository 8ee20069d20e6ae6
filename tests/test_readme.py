"""The README's tour as written: every `controlplane` command it shows exists with the options it uses, and
every GraphQL operation of any of its blocks is valid against the schema (test_api_inputs.py runs the tour's).

(The tour was also run by hand against `controlplane up` and `controlplane up --demo`; this keeps the text and
the product from drifting apart.)
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from graphql import GraphQLSchema, parse, validate
from typer.main import get_command

from controlplane.api.metrics import ApiMetrics
from controlplane.api.schema import build_schema
from controlplane.cli import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def operations() -> list[str]:
    """Each operation of the ```graphql blocks on its own (a block holds several, with # comments between)."""
    ops: list[str] = []
    for block in blocks("graphql"):
        current: list[str] = []
        for line in block.splitlines():
            if re.match(r"^(query|mutation|subscription)\b", line) and current:
                ops.append("\n".join(current))
                current = []
            current.append(line)
        if current:
            ops.append("\n".join(current))
    return [op for op in ops if "{" in op]


def commands() -> list[list[str]]:
    """The `controlplane ...` lines of the ```sh blocks, comments and placeholders stripped."""
    found = []
    for block in blocks("sh"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("controlplane "):
                found.append(shlex.split(re.sub(r"<[^>]+>", "X", line.replace("$(hostname)", "host").replace("$NODE", "host"))))
    return found


def schema() -> GraphQLSchema:
    built = build_schema(max_depth=12, max_descendants=10_000, metrics=ApiMetrics())
    return built._schema


def test_the_readme_has_a_tour() -> None:
    assert len(operations()) >= 8 and len(commands()) >= 10


@pytest.mark.parametrize("operation", operations())
def test_every_graphql_operation_in_the_readme_is_valid(operation: str) -> None:
    errors = validate(schema(), parse(operation))
    assert errors == [], f"{operation}\n{errors}"


@pytest.mark.parametrize("argv", commands(), ids=lambda a: " ".join(a[:2]))
def test_every_command_in_the_readme_exists_with_its_options(argv: list[str]) -> None:
    cli = get_command(app)
    name, *rest = argv[1:]
    assert hasattr(cli, "commands") and name in cli.commands, f"no command {name!r}"
    command = cli.commands[name]
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):  # a group: `token create ...`
        sub, *rest = rest
        assert sub in command.commands, f"no command {name} {sub!r}"
        command = command.commands[sub]
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    used = {a.split("=")[0] for a in rest[: rest.index("--")] if a.startswith("-")} if "--" in rest else \
        {a.split("=")[0] for a in rest if a.startswith("-")}
    assert used <= known, f"{' '.join(argv)}: unknown {sorted(used - known)}"
