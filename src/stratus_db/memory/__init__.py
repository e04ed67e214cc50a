"""What the agents remember about each user."""
