"""The data subject's rights under LGPD: export and erasure (manager.py), the consent ledger (consent.py) and the
checks the library makes with it (gate.py). docs/privacy.md."""
