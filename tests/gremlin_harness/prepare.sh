#!/usr/bin/env bash
# Build the Gremlin Server (TinkerPop 3.8) launcher and resolve its classpath, so that later
# test runs need no network. Idempotent: returns at once when target/ is up to date.
#
#   tests/neo4j_harness/prepare.sh           # build if needed (works from any cwd)
#   tests/neo4j_harness/prepare.sh --force   # rebuild
#
# Output: target/classes/harness/GremlinHarnessMain.class and target/classpath.txt
# (':'-separated jars in the local Maven repository, ~/.m2 unless MAVEN_OPTS says otherwise).
# Extra Maven flags can be passed in GREMLIN_HARNESS_MVN_ARGS (e.g. "-o" for offline).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARGET="$HERE/target"
CLASSFILE="$TARGET/classes/harness/GremlinHarnessMain.class"
CLASSPATH_FILE="$TARGET/classpath.txt"
STAMP="$TARGET/.prepared"

force=0
[[ "${1:-}" == "--force" ]] && force=1

up_to_date() {
    [[ -f "$STAMP" && -f "$CLASSFILE" && -s "$CLASSPATH_FILE" ]] || return 1
    # Rebuild when the pom, the Java sources or this script are newer than the stamp.
    [[ -z "$(find "$HERE/pom.xml" "$HERE/src" "$HERE/prepare.sh" -newer "$STAMP" -print -quit)" ]] || return 1
    # Every jar of the classpath must still be in the local repository.
    local jar
    local IFS=':'
    for jar in $(cat "$CLASSPATH_FILE"); do
        [[ -f "$jar" ]] || return 1
    done
    return 0
}

if [[ $force -eq 0 ]] && up_to_date; then
    exit 0
fi

mkdir -p "$TARGET"
# Serialise concurrent callers (e.g. several pytest workers); re-check after the lock.
exec 9>"$TARGET/.prepare.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
    if [[ $force -eq 0 ]] && up_to_date; then
        exit 0
    fi
fi

command -v mvn >/dev/null 2>&1 || { echo "prepare.sh: mvn not found (apt-get install maven)" >&2; exit 1; }

rm -f "$STAMP"
echo "prepare.sh: building Gremlin Server launcher with Maven (log: $TARGET/prepare.log)" >&2
# shellcheck disable=SC2086
if ! mvn -q -B ${GREMLIN_HARNESS_MVN_ARGS:-} -f "$HERE/pom.xml" \
    compile dependency:build-classpath \
    -Dmdep.outputFile="$CLASSPATH_FILE" -Dmdep.includeScope=runtime \
    >"$TARGET/prepare.log" 2>&1; then
    tail -n 60 "$TARGET/prepare.log" >&2
    echo "prepare.sh: Maven build failed" >&2
    exit 1
fi

[[ -f "$CLASSFILE" && -s "$CLASSPATH_FILE" ]] || { echo "prepare.sh: build produced no output" >&2; exit 1; }
touch "$STAMP"
