"""Developer tools: code generation, the local suite runner, the demo and benchmarks."""
