"""WSGI and ASGI adapters, installed as ``fcgi_async.adapters``.

They depend on the core (:mod:`fcgi_async.types`, :mod:`fcgi_async.cgi`); the core never
imports them.
"""
