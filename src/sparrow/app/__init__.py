"""``sparrow app``: a Gradio page over the pipeline (upload, query, run, overlay, frame slider, TSF boxes, downloads).

``session.py`` keeps each browser session's files apart and checks uploads, ``models.py`` loads models once,
``render.py`` writes a run's overlay and exports and draws frame views, ``ui.py`` is the page and its handlers,
``server.py`` starts and stops it, ``commands.py`` is the command line. Importing this package imports nothing heavy.
"""
