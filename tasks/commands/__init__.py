"""Command builders: the shell and config files a task sends, as plain strings; nothing here runs."""
