"""The HTTP face: the Flask app factory and one blueprint per API face. Only this package
imports Flask; the domain beside it (core, models, jobs, batches) never imports it."""
