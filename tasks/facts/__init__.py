"""What the server says, as data: the probes' parsers, the release model, the step model."""
