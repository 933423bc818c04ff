"""One handler module per job kind; service.jobs.kinds names which function runs each kind.

A handler is `run(job, context, events)`: it records the job's end in `context.jobs` and
publishes its last event. An exception it raises fails the job with that message.
"""
