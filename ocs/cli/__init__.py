"""The command line: the operator's everyday commands and the demo."""
