"""Jobs: their records, kinds and requests, the queue, the events, and messages to workers."""
