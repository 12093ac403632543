"""carbon-optimizer: a carbon-aware workload scheduler (see docs/architecture.md)."""

VERSION = "0.2.0"
