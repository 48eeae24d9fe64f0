"""``undiffuse serve``: a local HTTP API and a web page over trained runs (FastAPI on uvicorn, the optional
``serve`` extra). :mod:`.app` builds the app (:func:`~undiffuse.serve.app.create_app`), :mod:`.catalog` holds the
models, :mod:`.batcher` queues and batches requests, :mod:`.work` runs them, :mod:`.requests` checks them,
:mod:`.outputs` writes the answers through the data-kind writers, :mod:`.server` runs uvicorn."""
