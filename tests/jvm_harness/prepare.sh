#!/usr/bin/env bash
# Build the JVM test servers' launchers and resolve their classpaths, so that later test runs need
# no network. One script for every harness directory (tests/*_harness with a pom.xml); idempotent:
# a directory whose target/ is up to date is skipped at once.
#
#   tests/jvm_harness/prepare.sh tests/neo4j_harness tests/gremlin_harness   # build what is stale
#   tests/jvm_harness/prepare.sh --force tests/janusgraph_harness            # rebuild
#
# Each directory gets target/classpath.txt (':'-separated jars in the local Maven repository, ~/.m2
# unless MAVEN_OPTS says otherwise) and, when it has Java sources, target/classes. This directory's
# own Java (harness.Lifeline, no dependencies) is compiled with javac into target/classes.
# Extra Maven flags can be passed in JVM_HARNESS_MVN_ARGS (e.g. "-o" for offline).
set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
force=0
dirs=()
for arg in "$@"; do
    if [[ "$arg" == "--force" ]]; then force=1; else dirs+=("$(cd "$arg" && pwd)"); fi
done

up_to_date() {  # dir
    local dir="$1" stamp="$1/target/.prepared" jar
    [[ -f "$stamp" && -f "$dir/target/classpath.txt" ]] || return 1
    # Rebuild when the pom, the Java sources or this script are newer than the stamp.
    [[ -z "$(find "$dir/pom.xml" "$SELF/prepare.sh" $( [[ -d "$dir/src" ]] && echo "$dir/src") -newer "$stamp" -print -quit)" ]] || return 1
    local IFS=':'
    for jar in $(cat "$dir/target/classpath.txt"); do
        [[ -f "$jar" ]] || return 1
    done
    return 0
}

build_lifeline() {
    local out="$SELF/target/classes"
    local cls="$out/harness/Lifeline.class" src="$SELF/src/main/java/harness/Lifeline.java"
    if [[ $force -eq 1 || ! -f "$cls" || "$src" -nt "$cls" ]]; then
        mkdir -p "$out"
        javac --release 17 -d "$out" "$src"
    fi
}

build() {  # dir
    local dir="$1" target="$1/target"
    mkdir -p "$target"
    # Serialise concurrent callers (e.g. several pytest workers); re-check after the lock.
    exec 9>"$target/.prepare.lock"
    command -v flock >/dev/null 2>&1 && flock 9
    if [[ $force -eq 0 ]] && up_to_date "$dir"; then
        exec 9>&-
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || { echo "prepare.sh: mvn not found (apt-get install maven)" >&2; exit 1; }
    rm -f "$target/.prepared"
    local goals="dependency:build-classpath"
    [[ -d "$dir/src" ]] && goals="compile $goals"
    echo "prepare.sh: building $(basename "$dir") with Maven (log: $target/prepare.log)" >&2
    # shellcheck disable=SC2086
    if ! mvn -q -B ${JVM_HARNESS_MVN_ARGS:-} -f "$dir/pom.xml" $goals \
        -Dmdep.outputFile="$target/classpath.txt" -Dmdep.includeScope=runtime \
        >"$target/prepare.log" 2>&1; then
        tail -n 60 "$target/prepare.log" >&2
        echo "prepare.sh: Maven build of $dir failed" >&2
        exit 1
    fi
    [[ -s "$target/classpath.txt" ]] || { echo "prepare.sh: $dir produced no classpath" >&2; exit 1; }
    touch "$target/.prepared"
    exec 9>&-
}

command -v javac >/dev/null 2>&1 || { echo "prepare.sh: javac not found (apt-get install openjdk-17-jdk-headless)" >&2; exit 1; }
build_lifeline
for dir in "${dirs[@]}"; do
    if [[ $force -eq 1 ]] || ! up_to_date "$dir"; then
        build "$dir"
    fi
done
