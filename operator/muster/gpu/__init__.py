"""The GPU stack gate: node drivers, the CUDA an image needs, the container toolkit."""
