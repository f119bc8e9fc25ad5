"""`make bench`: benchmark scripts (not tests) for scoring throughput, the dashboard at scale and memory."""
