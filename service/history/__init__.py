"""The job history over time: the report, its rollups, and the retention that expires old rows."""
