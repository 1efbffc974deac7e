"""Motion data and maths: the Take (BEAT2/SMPL-X parameters), the SMPL-X skeleton and forward kinematics,
rotations, the model's motion representation and body parts, root motion, intensity, key reduction and BVH.
numpy only (torch where a function says so), so the bpy layer can use it inside Blender."""
