"""The admission path every gate shares: the pipeline, the webhook server, audit, observers."""
