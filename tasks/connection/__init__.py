"""The connection: which hosts, logging in (retries, host-key trust), and the one runner of commands."""
