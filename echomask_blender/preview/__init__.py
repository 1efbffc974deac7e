"""Render Preview: a small MP4 of the playing take with the speech (poses read from the rig, views drawn with
numpy, encoded by Blender's own FFmpeg), run in a background Blender (../preview_job.py)."""
