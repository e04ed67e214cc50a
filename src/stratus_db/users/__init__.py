"""Users: profiles, ANAC licences, preferences."""
