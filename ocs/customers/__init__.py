"""The customer side (DESIGN.md "The customer side"): who the customer is, kept in the business database.

- ``values``: parties, customers, billing accounts, company nodes and lines as pydantic models
  (TMF632 / TMF629 / TMF666 shapes), the API's bodies and answers too.
- ``records``: the queries on the customer tables (``ocs.db.customers``).
- ``service``: the operations, and the resumable step that makes a line or a company pool an
  account of the balance engine (through the ``EngineAccounts`` port, which the API door fills).
- ``identity_check`` and ``credit``/``credit_load``: activation's identity validation and the
  credit check, pure functions over values, the rules as data (config/credit_classes.toml).

This wing imports no door (``ocs.api``, ``ocs.cli``), no charging and not the process.
"""
