"""Web framework integrations: one module each, importing its framework only when imported itself.

flask, django (a django.tasks backend and a Django app), bottle (with gevent), pyramid, tornado,
asgi (FastAPI/Starlette), aiohttp and wsgi (any WSGI app). `import chute` imports none of them.
"""
