"""monitor stage of the lifecycle."""
