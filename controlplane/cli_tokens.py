"""`controlplane token ...` and `controlplane keys ...`: credentials from the command line.

Tokens are asked of the running API (createToken, revokeToken) with the CLI's own
credential: CONTROLPLANE_TOKEN, else `<DATA_DIR>/admin.token`; the API is found at
CONTROLPLANE_API_URL, else the address of the local stack (`stack.json`). Keys are
files of the local keys directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from controlplane.settings import Settings, load_settings

token_app = typer.Typer(help="Create, revoke and show credentials.", no_args_is_help=True)
keys_app = typer.Typer(help="Rotate and retire the token signing keys of this data directory.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Where embedded state lives [env DATA_DIR]")]


def _settings(data_dir: Path | None) -> Settings:
    return load_settings(data_dir=data_dir)


def api_url(settings: Settings) -> str:
    from controlplane.cli_api import api_url as found

    url = found(settings)
    if url is None:
        err.print("[red]error[/red] no API found: run `controlplane up`, or set CONTROLPLANE_API_URL")
        raise typer.Exit(2)
    return url


def graphql(settings: Settings, query: str, **variables: Any) -> dict[str, Any]:
    """One GraphQL operation against the API with the CLI's credential; a failure is printed with its code (exit 1)."""
    from controlplane.cli_api import ApiClient
    from controlplane.cli_ops import failing

    with failing():
        return ApiClient(settings)(query, **variables)


@token_app.command("create")
def create(
    subtree: Annotated[Optional[list[str]], typer.Option("--subtree", help="A Node or Allocation id (repeatable); default: yours")] = None,
    verbs: Annotated[Optional[str], typer.Option(help="Comma-separated: read,spawn,stop,supervise,watch,submit,raw_query,register")] = None,
    ttl: Annotated[float, typer.Option(help="Lifetime in seconds")] = 3600,
    role: Annotated[Optional[str], typer.Option(help="admin | operator | viewer (its verbs unless --verbs)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Print a new token derived from yours: never more verbs, a wider subtree or a longer life than yours."""
    answer = graphql(
        _settings(data_dir),
        "mutation($s: [ID!], $v: [String!], $t: Float, $r: String) { createToken(subtree: $s, verbs: $v, ttlS: $t, role: $r) "
        "{ token principal verbs subtree expiresAt } }",
        s=subtree, v=verbs.split(",") if verbs else None, t=ttl, r=role,
    )["createToken"]
    err.print(f"{answer['principal']}: {','.join(answer['verbs'])} on {','.join(answer['subtree'])}, "
              f"expires in {ttl:g}s")
    print(answer["token"])


@token_app.command("revoke")
def revoke(
    token: Annotated[str, typer.Argument(help="The token itself, or (admins) its id")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a token and every token derived from it."""
    settings = _settings(data_dir)
    if token.count(".") == 2:
        graphql(settings, "mutation($t: String!) { revokeToken(token: $t) }", t=token)
    else:
        graphql(settings, "mutation($i: ID!) { revokeToken(id: $i) }", i=token)
    console.print("revoked")


@token_app.command("whoami")
def whoami(data_dir: DataDir = None) -> None:
    """What the CLI's credential is and grants."""
    who = graphql(_settings(data_dir), "{ whoami { principal verbs subtree expiresAt } }")["whoami"]
    console.print(f"{who['principal']}: {','.join(who['verbs'])} on {','.join(who['subtree'])}")


@token_app.command("url")
def url(data_dir: DataDir = None) -> None:
    """The GraphiQL address that logs a browser in with the CLI's credential."""
    from controlplane.auth.bootstrap import read_cli_token

    settings = _settings(data_dir)
    print(f"{api_url(settings)}/graphql?token={read_cli_token(settings) or ''}")


@keys_app.command("rotate")
def rotate(data_dir: DataDir = None) -> None:
    """Sign new tokens with a new key; tokens of the old one keep working until it is retired. Restart the API."""
    from controlplane.auth.bootstrap import keys_dir
    from controlplane.auth.keys import rotate_signing_key

    old, new = rotate_signing_key(keys_dir(_settings(data_dir)))
    console.print(f"signing with {new}; {old or 'no previous key'} still verifies (retire it with `controlplane keys retire {old}`)")


@keys_app.command("retire")
def retire(kid: Annotated[str, typer.Argument(help="The key id `keys rotate` printed")], data_dir: DataDir = None) -> None:
    """Stop accepting tokens signed by a previous key. Restart the API."""
    from controlplane.auth.bootstrap import keys_dir
    from controlplane.auth.keys import retire_key

    if not retire_key(keys_dir(_settings(data_dir)), kid):
        err.print(f"[red]NOT_FOUND[/red] no retired-but-accepted key {kid}")
        raise typer.Exit(1)
    console.print(f"tokens signed by {kid} are no longer accepted")
