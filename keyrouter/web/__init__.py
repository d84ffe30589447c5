"""`keyrouter dashboard`: a small read-mostly web app over the store, for the people who read the
results (survey charts, the opt-out ledger and its deadlines, dead letters, status).

Needs the optional extra `keyrouter[web]` (Starlette, Jinja2, uvicorn, python-multipart).  Nothing
here is imported by the worker: `keyrouter.cli.dashboard` imports the web libraries only when the
command runs, and says so in one line when they are missing.
"""
