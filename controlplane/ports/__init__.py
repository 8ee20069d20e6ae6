"""The ports the core owns: what the services need from a graph engine, a dispatcher and native executors.

Each port is shaped by a role (kopf's small storage interfaces): a consumer is
typed with the smallest role it uses, and a graph adapter implements them all.
"""
