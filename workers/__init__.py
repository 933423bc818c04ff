"""corral's inference side: the Celery app, its tasks, and the engine that decodes."""
