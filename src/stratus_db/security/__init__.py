"""Who is acting: principals (access rules come in a later issue)."""
