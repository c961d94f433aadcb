"""The GPU stack gate decided purely: CUDA grammar, GPUStackPolicy, node facts, pod placement."""
