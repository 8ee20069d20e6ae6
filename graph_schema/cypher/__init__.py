"""Cypher engines: the shared statements (base) and one small adapter per engine."""
