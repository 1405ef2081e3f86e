"""Config and manifest schemas, YAML loading with line numbers, path resolution."""
