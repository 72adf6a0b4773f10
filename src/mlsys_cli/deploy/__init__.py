"""deploy stage of the lifecycle."""
