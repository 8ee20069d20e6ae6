"""Jobs: a DAG of tasks unwrapped into the allocation hierarchy by a native `job` root.

spec (the job spec), model (states and records), ports (the job store), service
(submit, cancel, ask), executor (the job root), api (GraphQL types), and the
job store for each engine family (cypher, gremlin).
"""
