"""Human review of candidate pairs: ``idleak review OUT`` serves a small web app over an analysis's
OUT folder and stores each verdict in ``OUT/review.sqlite``; ``idleak report OUT`` counts them.

``candidates`` and ``db`` need only the standard library and pyarrow; ``app`` needs the ``review``
extra (FastAPI, uvicorn).
"""
