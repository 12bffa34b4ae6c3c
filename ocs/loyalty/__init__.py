"""The loyalty wing: customer scores and segments, loyalty rules and bonus (DESIGN.md "Loyalty")."""
