"""Staff screens of the partners app."""

# Agreements and settlement statements (partners/settlement/admin.py).
from partners.settlement import admin as settlement_admin  # noqa: E402, F401
