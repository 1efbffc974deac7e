"""Jobs that run outside Blender's process: the worker (`python -m core.jobs.worker`), the JSON-lines event
protocol it speaks (protocol.py, standard library only, so Blender's Python and background renders can use
it) and the client that starts, polls and cancels workers (client.py, no bpy)."""
