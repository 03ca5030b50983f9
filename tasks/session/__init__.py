"""The session: runs a task on each host with the lock, the audit line, the output and one exit path."""
