"""Building blocks with no domain knowledge."""
