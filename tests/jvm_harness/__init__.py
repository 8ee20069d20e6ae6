"""The one JVM-server harness every Java test server runs on (see process.py and prepare.sh)."""
