"""controlplane: a graph-backed control plane for actor hierarchies on decentralized compute.

A map for newcomers (docs/architecture.md has the longer one):
domain (pure core) < ports (the roles the core needs) < services (use cases, assembled by
services.build) < api, workers, graph_schema (adapters) < wiring (opens adapters from settings)
< embedded, cli (entry points). Jobs are their own package across those layers.
"""
