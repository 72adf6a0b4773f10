"""continual stage of the lifecycle."""
