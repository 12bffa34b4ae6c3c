"""The online charging server application."""
