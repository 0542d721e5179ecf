"""The local web explorer: a slider per prototype (session.py computes, server.py serves, static/ is the page)."""
