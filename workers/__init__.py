"""Celery node agents: the Celery app, thin tasks, and the process executor they drive."""
