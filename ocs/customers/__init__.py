"""The customer side: parties, customers, lines, activation (identity validation, the credit check)."""
