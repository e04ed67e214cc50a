"""Alembic migrations, shipped inside the package (script_location = stratus_db:migrations)."""
