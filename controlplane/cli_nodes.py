"""`controlplane node ...`: node agents' credentials from the command line (asked of the running API).

An admin makes a join credential (`node join-token`), hands it to the new machine's agent
once (CONTROLPLANE_JOIN_TOKEN or `--join-token-file`), and the agent exchanges it for its
own node credential when it first starts. `node revoke` ends a node's credential.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from controlplane.cli_tokens import graphql
from controlplane.settings import load_settings

node_app = typer.Typer(help="Join credentials and node credentials of node agents.", no_args_is_help=True)
err = Console(stderr=True)
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Where embedded state lives [env DATA_DIR]")]


@node_app.command("join-token")
def join_token(
    ttl: Annotated[float, typer.Option(help="Lifetime in seconds (at most 7 days)")] = 900,
    name: Annotated[Optional[str], typer.Option(help="The only node name it admits (default: any name not taken)")] = None,
    uses: Annotated[int, typer.Option(help="How many agents may join with it")] = 1,
    data_dir: DataDir = None,
) -> None:
    """Print a join credential for a node agent: give it to the agent once (CONTROLPLANE_JOIN_TOKEN)."""
    answer = graphql(load_settings(data_dir=data_dir),
                     "mutation($n: String, $t: Float!, $u: Int!) { createJoinToken(name: $n, ttlS: $t, uses: $u) "
                     "{ token name uses expiresAt } }", n=name, t=ttl, u=uses)["createJoinToken"]
    err.print(f"join credential for node {answer['name']}: {answer['uses']} use(s), expires in {ttl:g}s")
    print(answer["token"])


@node_app.command("revoke")
def revoke(node: Annotated[str, typer.Argument(help="Node id")], data_dir: DataDir = None) -> None:
    """Revoke the credential a node's agent holds: it stops at its next request and cannot come back with it."""
    graphql(load_settings(data_dir=data_dir), "mutation($i: ID!) { revokeNodeCredential(id: $i) }", i=node)
    err.print(f"the credential of node {node} is revoked; `controlplane deregister {node}` frees its name")
