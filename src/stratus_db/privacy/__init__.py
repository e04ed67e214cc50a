"""The data subject's rights under LGPD: export (docs/privacy.md)."""
