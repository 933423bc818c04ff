"""corral's command line: a client of the HTTP API, plus the commands that start processes."""
