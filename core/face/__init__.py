"""Face and lip-sync (no bpy): phone classes and visemes, the phone-accurate mouth (`lipsync`), the fitted
coefficients (`fitted`, fitted by `python -m core.face.fit`), lip-sync measurements (`measure`) and the
mapping of our face output onto any character's shape keys (`mapping`). numpy only (the bpy layer imports it; Blender ships no scipy).
"""
