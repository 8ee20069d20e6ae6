#!/bin/bash
# The compose gremlin-server: write the credentials graph (one user, GREMLIN_USER, whose password is
# GREMLIN_PASSWORD: there is no default), then run the server on this directory's configuration.
set -euo pipefail
cd /opt/gremlin-server
: "${GREMLIN_PASSWORD:?GREMLIN_PASSWORD is not set: the Gremlin Server has no default password}"
java -cp "lib/*" harness.CredentialsFile conf/credentials.properties "${GREMLIN_USER:-controlplane}"
exec bin/gremlin-server.sh conf/controlplane.yaml
