"""The operator's and the customer's HTTP door: routes, bodies, answers."""
