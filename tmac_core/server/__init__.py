"""A local OpenAI-compatible HTTP server over one loaded model (Starlette + Uvicorn, no Qt).

    backend.py     the Backend protocol the server talks to, and EngineBackend (an Engine
                   in one worker thread: `python -m tmac_core serve`)
    scheduler.py   the bounded FIFO queue: one job at a time, 429 when full
    openai_api.py  OpenAI's request checks, answers and error objects
    stops.py       stop sequences over streamed text
    app.py         the Starlette routes and the streamed (SSE) answers
    run.py         Uvicorn in the foreground or on a thread

The app's window serves its own engine process through app.server (a Backend of its own).
Nothing is imported here: backend.py stays light (no Starlette, no numpy) for the window,
which imports the rest only when the server is switched on.
"""
