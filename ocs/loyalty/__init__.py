"""The loyalty wing (DESIGN.md "Loyalty"): customer scores and segments; programmes as rules over
usage and payments, counters per member and period, and bonus credited into the balance engine
exactly once per (rule, trigger)."""
