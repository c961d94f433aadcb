"""The image gate decided purely: ImagePolicy, the decision it makes, digest pinning."""
