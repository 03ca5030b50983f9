"""Peers measured side by side with gangway in the benchmarks (installed in their own venv, never imported by
the tool itself)."""
