"""models stage of the lifecycle."""
