"""The HTTP service: the data layer behind a FastAPI application (`create_app`, started by `stratus-db serve`)."""

from stratus_db.api.app import create_app
from stratus_db.api.auth import issue_token

__all__ = ["create_app", "issue_token"]
