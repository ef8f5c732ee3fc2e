"""The Web API (``/api/0/…``, Sentry's public Web API shapes), one router per resource over
one access chain; see ``app.py`` for the map and ``deps.py`` for the access chain."""
