"""`make bench`: the core's own overhead, prompt-cache share, and Slack HTTP throughput."""
