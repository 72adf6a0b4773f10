"""features stage of the lifecycle."""
