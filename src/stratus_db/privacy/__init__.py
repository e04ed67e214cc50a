"""The data subject's rights under LGPD: the consent ledger (consent.py) and the checks the library makes with it
(gate.py)."""
