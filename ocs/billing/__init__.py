"""The billing side: the usage spool and its export."""
