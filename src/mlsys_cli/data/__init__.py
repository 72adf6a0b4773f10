"""data stage of the lifecycle."""
