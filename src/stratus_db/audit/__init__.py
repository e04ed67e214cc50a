"""The audit trail: every change, who made it, from where and why."""
