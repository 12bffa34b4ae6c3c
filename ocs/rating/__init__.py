"""The tariff book and the pure rating functions (used by charging and billing)."""
