"""Native executors shipped with the control plane that need nothing but a NativeContext (plugins like any other).

The job root's executor lives with jobs (controlplane/jobs/executor.py).
"""
